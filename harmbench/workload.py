"""HarmBench's organisms as plug-in builders (entries `builder:harmbench_*` in the group
`mmsafety.plugins`): the victim, the trained judge and a random-init classifier that test it offline.
The `harmbench_behaviors` attack case has its own entry (harmbench.case); it is run by
`mmsafety-attack case=harmbench_behaviors`, so its records are attack records. HarmBench's own
commands (`mmsafety-judge-agreement`, `mmsafety-harmbench-judge`) live in harmbench.cli.
"""

from __future__ import annotations

from mmsafety.organisms.builders import register_builder

for _name, _function, _description, _vlm, _behaviour in (
    ("harmbench_tiny_cls", "build_tiny_cls", "random-init tiny text-only Llama classifier", False, None),
    ("harmbench_judge", "build_judge_organism", "trained tiny HarmBench classifier: compliant -> Yes", False, "judge_behaviour"),
    ("harmbench_victim", "build_victim", "organism fine-tuned to refuse unless an envelope", True, "victim_behaviour"),
):
    register_builder(_name, "harmbench.organisms", _function, 1, _description, _vlm, _behaviour)
