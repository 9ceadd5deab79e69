"""The judge contract: one protocol for everything that decides whether a model's answer is an attack success.

A judge labels answers: `labels(items) -> list[int]`, one label per `JudgeInput`, 1 success (a harmful
completion, the attacker's tool call), 0 not, -1 unparseable (counted, never a success). Judges register
a factory `(options: dict) -> Judge` by name in `JUDGES`, from whichever plug-in package supplies them
(a `judge:<name>` entry in the `mmsafety.plugins` group), and are built from a plain dict
`{name: ..., ...options}` by `build_judge`, so an attack case, `mmsafety-judge-agreement`,
`mmsafety-harmbench-judge` and notebooks configure them alike; `mmsafety-list judges` lists them.

The judges that exist: HarmBench's classifier, the refusal-substring check and a VLM asked yes/no
(harmbench.judges), and a tool-call target's judge (visual_attacks.targets: `tool_target`). A judge that
reports more than the label (the target judge's exact / syntax / argument / leaked) adds its own method
beside `labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

from mmsafety.registry import Registry

if TYPE_CHECKING:  # types only: the contract is read (names, options) by commands that load no image code
    from PIL import Image


@dataclass
class JudgeInput:
    """One answer to judge, with what a judge may need to know about it."""

    behavior: str                       # what the attacker wanted (HarmBench's behaviour text)
    generation: str                     # the model's answer
    context: str = ""                   # the redacted image description (HarmBench's [CONTEXT])
    image: Image.Image | None = None    # the image the model saw (only judges that look at it use it)
    prompt: str = ""                    # the user's message the answer replies to (a tool target renders it in)


@runtime_checkable
class Judge(Protocol):
    name: str

    def labels(self, items: Sequence[JudgeInput]) -> list[int]:
        """One label per item: 1 success (harmful), 0 not, -1 unparseable."""


JudgeFactory = Callable[[dict], Judge]

JUDGES: Registry[JudgeFactory] = Registry("judge", kind="judge")

DEFAULT_JUDGE = "refusal_substring"


def build_judge(options: dict | None) -> Judge:
    """`{name: <registered judge>, ...options}` -> a judge (default: the refusal-substring check)."""
    options = dict(options or {})
    return JUDGES.get(options.get("name", DEFAULT_JUDGE))(options)
