"""What an attack is aimed at: the contract between the attack workload and whoever supplies the goal.

The attack job (visual_attacks) knows how to run PGD, save the adversarial image as a PNG,
reload it and measure stealth. An *attack case* knows the rest: which images to start from,
the loss to minimise, and how to judge an image as deployed. Cases register by name in `CASES`
and objectives in `OBJECTIVES`, from whichever plug-in package supplies them; the attack job
builds the case that `case.name` (conf/case/*.yaml) names, so no workload imports another.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

from mmsafety.errors import ConfigError, UserError
from mmsafety.models.capabilities import PIXEL_LOSS
from mmsafety.registry import Registry

if TYPE_CHECKING:  # types only: the contract is read (registries, needs) by commands that load no model
    import torch
    from PIL import Image

    from mmsafety.models.base import ModelAdapter

# pixels [N,3,H,W] in [0,1] (requires grad), step -> loss [N] (fp32)
Objective = Callable[["torch.Tensor", int], "torch.Tensor"]


@dataclass(frozen=True)
class ObjectiveKind:
    """A named objective (`attack/objective=NAME`, read as `attack.objective.name`): `build(case, adapter, bases, clean, attack) -> Objective`,
    and the capabilities it needs from the crafting model beyond a pixel loss."""

    build: Callable[..., Objective]
    needs: frozenset[str] = frozenset({PIXEL_LOSS})


OBJECTIVES: Registry[ObjectiveKind] = Registry("attack/objective", kind="objective")


def register_objective(name: str, *needs: str):
    """Decorator for an objective builder `(case, adapter, bases, clean, attack) -> Objective`:
    `@register_objective("verdict_flip")`, or with needs beyond a pixel loss:
    `@register_objective("tool_misuse", GENERATE)`."""
    def decorate(build):
        OBJECTIVES.add(name, ObjectiveKind(build, frozenset({PIXEL_LOSS, *needs})))
        return build

    return decorate


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

    `objectives` names the objectives (`attack/objective=NAME`) the case implements; the attack job
    refuses any other in one line before it loads a model. `judge_needs`: the capabilities a
    model needs to judge saved images (any such model can judge another model's PNGs).
    """

    objectives: ClassVar[tuple[str, ...]]
    judge_needs: ClassVar[frozenset[str]]
    # The rate the leaderboard and the summary lead with (attack success).
    headline: ClassVar[str]
    # Fields of AttackBase.info whose values the summary reports success rates by.
    group_by: ClassVar[tuple[str, ...]] = ()

    def prepare(self, adapter: ModelAdapter) -> None:
        """Called with the job's model before `bases()`: a case whose start images depend on the model
        (HarmBench fits each image into the model's square) reads what it needs here. Default: nothing."""

    @abc.abstractmethod
    def bases(self) -> list[AttackBase]:
        """The images to attack, in a deterministic order (resume relies on it)."""

    @abc.abstractmethod
    def spec(self) -> dict:
        """What goes into the record's spec: enough to tell two runs of the case apart."""

    def objective(self, adapter: ModelAdapter, bases: list[AttackBase], clean: torch.Tensor, attack) -> Objective:
        """The loss PGD minimises for `bases` (clean pixels `clean`, at the adapter's input size):
        the registered objective `attack.objective.name` built for this case."""
        return OBJECTIVES.get(attack.objective.name).build(self, adapter, bases, clean, attack)

    @abc.abstractmethod
    def judge(self, adapter: ModelAdapter, image: Image.Image, base: AttackBase) -> Judgement:
        """Judge an image reloaded from its saved PNG, through the model's real processor."""

    def utility(self, clean: Judgement, adversarial: Judgement, base: AttackBase) -> dict[str, float] | None:
        """How much of the benign behaviour survives the perturbation: rates in [0,1] by name; None if not defined."""
        return None


CASES: Registry[type[AttackCase]] = Registry("case.name", kind="case")


def build_case(case_cfg: dict, objective: str | None = None) -> AttackCase:
    """The registered case that `case_cfg["name"]` names, built from the rest of `case_cfg` (a plain
    dict: conf/case/*.yaml, or the `case` of a saved record's config). With `objective`, refuse in one
    line an objective the case does not implement."""
    kwargs = {k: v for k, v in case_cfg.items() if k != "_target_"}  # records written before the registry
    cls = CASES.get(kwargs.get("name"))
    try:
        case = cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"case={kwargs.get('name')}: {type(e).__name__}: {str(e).splitlines()[0]}; "
                          f"see conf/case/ for the keys each case takes") from None
    if objective is not None:
        OBJECTIVES.get(objective)
        if objective not in case.objectives:
            raise ConfigError(f"attack/objective={objective} does not apply to case={kwargs.get('name')}, "
                              f"which implements {', '.join(case.objectives)}")
    return case
