"""HarmBench's plug-in entry (`harmbench = "harmbench.workload"` in the group `mmsafety.workloads`).

Importing it registers what the core looks up by name: the `harmbench_behaviors` attack case (run by
`mmsafety-attack case=harmbench_behaviors`, so its records are attack records) and the organisms that
test it offline (the victim, the trained judge and a random-init classifier). HarmBench's own
commands (`mmsafety-judge-agreement`, `mmsafety-harmbench-judge`) live in harmbench.cli.
"""

from __future__ import annotations

import importlib

from harmbench import case  # noqa: F401  (registers the harmbench_behaviors case)
from mmsafety.organisms.builders import BUILDERS, Builder


def _lazy(function: str):
    def build(out, seed):  # imported only when a build runs: training pulls in transformers
        getattr(importlib.import_module("harmbench.organisms"), function)(out, seed)

    return build


for _name, _function, _description, _vlm in (
    ("harmbench_tiny_cls", "build_tiny_cls", "random-init tiny text-only Llama classifier", False),
    ("harmbench_judge", "build_judge_organism", "trained tiny HarmBench classifier: compliant -> Yes", False),
    ("harmbench_victim", "build_victim", "organism fine-tuned to refuse unless an envelope", True),
):
    BUILDERS.add(_name, Builder(_lazy(_function), 1, _description, _vlm))
