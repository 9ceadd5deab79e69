"""What an attack is aimed at: the contract between the attack workload and whoever supplies the goal.

The attack job (visual_attacks) knows how to run PGD, save the adversarial image as a PNG,
reload it and measure stealth. An *attack case* knows the rest: which images to start from,
the loss to minimise, and how to judge an image as deployed. Tool-call misuse is a case in
visual_attacks; hiding a hateful meme from a moderator is a case in goat_bench. The attack
job builds the configured case from its `_target_` (conf/case/*.yaml), so neither workload
imports the other.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from PIL import Image

from mmsafety.models.base import VLMAdapter

# pixels [N,3,H,W] in [0,1] (requires grad), step -> loss [N] (fp32)
Objective = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class AttackBase:
    """One image to perturb, with what the case needs to know about it later."""

    key: str
    image: Image.Image
    info: dict = field(default_factory=dict)


@dataclass
class Judgement:
    """How a (clean or adversarial) image fares: rates in [0,1] by name, and one row per check."""

    rates: dict[str, float]
    rows: list[dict]


class AttackCase(abc.ABC):
    """A goal for an attack: bases to start from, an objective, a judge of saved images.

    `objectives` names the `attack.objective` values the case implements; the attack job
    refuses any other in one line before it loads a model.
    """

    objectives: ClassVar[tuple[str, ...]]
    # The rate the leaderboard and the summary lead with (attack success).
    headline: ClassVar[str]
    # Fields of AttackBase.info whose values the summary reports success rates by.
    group_by: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def bases(self) -> list[AttackBase]:
        """The images to attack, in a deterministic order (resume relies on it)."""

    @abc.abstractmethod
    def spec(self) -> dict:
        """What goes into the record's spec: enough to tell two runs of the case apart."""

    @abc.abstractmethod
    def objective(self, adapter: VLMAdapter, bases: list[AttackBase], clean: torch.Tensor, attack) -> Objective:
        """The loss PGD minimises for `bases` (clean pixels `clean`, at the adapter's input size)."""

    @abc.abstractmethod
    def judge(self, adapter: VLMAdapter, image: Image.Image, base: AttackBase) -> Judgement:
        """Judge an image reloaded from its saved PNG, through the model's real processor."""

    def utility(self, clean: Judgement, adversarial: Judgement, base: AttackBase) -> dict[str, float] | None:
        """How much of the benign behaviour survives the perturbation: rates in [0,1] by name; None if not defined."""
        return None
