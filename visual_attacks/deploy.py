"""Deploy transforms: what happens to a saved PNG on its way to the model that is attacked.

A chat product or an evaluation pipeline rarely hands the model the attacker's lossless PNG: it
re-encodes uploads as JPEG (VLMEvalKit sends API images as JPEG), or shrinks them to a fixed longest
side first. A deploy transform (`conf/deploy/`, `deploy=jpeg_75`) is a list of steps, each mapping
image file bytes to image file bytes with Pillow; the judge applies it to the saved PNG's bytes and
the victim's real processor then sees the result. `png` has no steps: the saved bytes, unchanged.

Step kinds register in `DEPLOY_STEPS`; a step is a mapping `{kind: jpeg, quality: 75}` whose other
keys are the kind's parameters (defaults filled in and recorded, so a record says exactly what ran).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
import io
import re
from typing import Any, Callable, Dict, List

from PIL import Image

from mmsafety.errors import ConfigError, UserError
from mmsafety.registry import Registry

RESAMPLING = {"nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
              "hamming": Image.Resampling.HAMMING, "bicubic": Image.Resampling.BICUBIC,
              "lanczos": Image.Resampling.LANCZOS}
# Pillow's JPEG chroma subsampling by name (4:2:0 is its default, and most encoders').
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


@dataclass(frozen=True)
class StepKind:
    """A kind of deploy step: its parameters' defaults, a check of their values (raise ConfigError),
    and `apply(image, **params) -> (image, (format, save options))`: what to write, and how."""

    defaults: dict[str, Any]
    check: Callable[..., None]
    apply: Callable[..., tuple[Image.Image, str]]


DEPLOY_STEPS: Registry[StepKind] = Registry("deploy.steps[].kind", kind="deploy")


def decode(data: bytes) -> Image.Image:
    """Image file bytes as an RGB image (the bytes are a verified PNG or what a step wrote)."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _resample(name: str, where: str) -> None:
    if name not in RESAMPLING:
        raise ConfigError(f"{where}: resample={name!r}; use one of {', '.join(RESAMPLING)}")


def _check_jpeg(quality, subsampling):
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"deploy jpeg step: quality={quality!r}; use a whole number from 1 to 100 (e.g. 75)")
    if subsampling not in SUBSAMPLING:
        raise ConfigError(f"deploy jpeg step: subsampling={subsampling!r}; use one of {', '.join(SUBSAMPLING)}")


def _jpeg(image, quality, subsampling):
    return image, ("JPEG", {"quality": quality, "subsampling": SUBSAMPLING[subsampling]})


def _check_downscale(factor, resample):
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor >= 1:
        raise ConfigError(f"deploy downscale step: factor={factor!r}; use a number >= 1 (2 halves each side)")
    _resample(resample, "deploy downscale step")


def _downscale(image, factor, resample):
    size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(size, RESAMPLING[resample]), ("PNG", {})


def _check_resize_longest(size, resample, enlarge):
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"deploy resize_longest step: size={size!r}; use a whole number of pixels (e.g. 512)")
    _resample(resample, "deploy resize_longest step")
    if not isinstance(enlarge, bool):
        raise ConfigError(f"deploy resize_longest step: enlarge={enlarge!r}; use true or false")


def _resize_longest(image, size, resample, enlarge):
    """Scale so the longest side is `size`; chat products only shrink (enlarge: false), so a smaller
    image passes unchanged unless `enlarge` is true."""
    longest = max(image.size)
    if longest == size or (longest < size and not enlarge):
        return image, ("PNG", {})
    scale = size / longest
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new, RESAMPLING[resample]), ("PNG", {})


DEPLOY_STEPS.add("jpeg", StepKind({"quality": 75, "subsampling": "4:2:0"}, _check_jpeg, _jpeg))
DEPLOY_STEPS.add("downscale", StepKind({"factor": 2, "resample": "bicubic"}, _check_downscale, _downscale))
DEPLOY_STEPS.add("resize_longest", StepKind({"size": 512, "resample": "bicubic", "enlarge": False},
                                            _check_resize_longest, _resize_longest))


@dataclass(frozen=True)
class Deploy:
    """A named list of steps, each `{"kind": ..., **params}` with every parameter filled in."""

    name: str
    steps: tuple[dict, ...] = field(default_factory=tuple)

    def apply(self, data: bytes) -> bytes:
        """The bytes the victim receives for the saved image file `data` (unchanged without steps).
        Each step decodes, transforms and re-encodes: a lossless PNG between steps, a JPEG where the
        step is one, so a composition such as resize-then-JPEG compresses once, last."""
        for step in self.steps:
            params = {k: v for k, v in step.items() if k != "kind"}
            image, (fmt, options) = DEPLOY_STEPS.get(step["kind"]).apply(decode(data), **params)
            data = encode(image, fmt, **options)
        return data

    def image(self, image: Image.Image) -> Image.Image:
        """`image` saved as a PNG, deployed and decoded again (the held-out checks during an attack)."""
        return image if not self.steps else decode(self.apply(encode(image, "PNG")))

    def spec(self) -> dict:
        """What a record says about the transform: its name and every step with its parameters."""
        return {"name": self.name, "steps": [dict(s) for s in self.steps]}


PNG = Deploy("png")


@dataclass
class DeployConfig:
    """The `deploy` config group's schema (conf/deploy/*.yaml)."""

    name: str = "png"
    steps: List[Dict[str, Any]] = field(default_factory=list)


def register_schema(cs) -> None:
    """Into Hydra's ConfigStore `cs` (idempotent: both the attack and the transfer workload call it)."""
    cs.store(group="deploy", name="deploy_schema", node=DeployConfig)


def build_deploy(cfg) -> Deploy:
    """The transform a `deploy` config (conf/deploy/*.yaml, a DictConfig or a plain dict) describes;
    an unknown step kind, parameter or value is refused in one line."""
    # heavy, deferred to when this runs: omegaconf
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg or {})
    name = plain.get("name") or "png"
    steps = []
    for i, step in enumerate(plain.get("steps") or []):
        if not isinstance(step, dict) or "kind" not in step:
            raise ConfigError(f"deploy={name}: step {i} is {step!r}; write each step as {{kind: jpeg, quality: 75}}")
        kind = DEPLOY_STEPS.get(step["kind"])
        unknown = set(step) - {"kind"} - set(kind.defaults)
        if unknown:
            raise ConfigError(f"deploy={name}: step {i} ({step['kind']}) has unknown parameter(s) "
                              f"{', '.join(sorted(unknown))}; it takes {', '.join(kind.defaults)}")
        params = {**kind.defaults, **{k: v for k, v in step.items() if k != "kind"}}
        kind.check(**params)
        steps.append({"kind": step["kind"], **params})
    return Deploy(name, tuple(steps))


# conf/ as installed (pyproject: package-dir "mmsafety.conf" = "conf"), wherever the process runs from.
CONFIG_PACKAGE = "mmsafety.conf"


def deploy_label(spec) -> str:
    """How tables name the transform in a record's `spec.deploy`: the preset's name, plus the steps when
    they differ from that preset's (`deploy=downscale_2 deploy.steps.0.factor=4` is not `downscale_2`),
    so two different transforms never share a column. Records from before deploy transforms: png."""
    # heavy, deferred to when this runs: omegaconf
    from omegaconf import OmegaConf

    if not isinstance(spec, dict):
        return "png"
    name, steps = str(spec.get("name") or "png"), spec.get("steps") or []
    preset = files(CONFIG_PACKAGE) / "deploy" / f"{name}.yaml"
    try:
        same = re.fullmatch(r"[A-Za-z0-9_.-]+", name) and build_deploy(OmegaConf.load(str(preset))).spec()["steps"] == steps
    except (OSError, ValueError, TypeError, UserError, ModuleNotFoundError):  # no such preset (a user's own), or an odd record
        same = False
    if same or not steps:  # no steps recorded: nothing to tell apart
        return name
    described = "; ".join(" ".join(f"{k}={v}" for k, v in s.items()) if isinstance(s, dict) else str(s) for s in steps)
    return f"{name} [{described}]"
