"""attack=worst_case: the worst case over several attacks, per image (Carlini et al.'s first rule of
robustness evaluation; AutoAttack's ensemble): a model is only as safe as the strongest attack says.

`attack.members` lists the attacks, in order, each `{name: LABEL, preset: NAME, KEY: VALUE...}`: the
preset conf/attack/NAME.yaml (of its `defaults:` list only its objective: the job's case and model stay), then
the worst case's own `eps`, `norm`, `steps` and batching (so `attack.eps=...` sweeps every member), then
the member's own KEY: VALUE overrides. For each image the members run in order and the first whose
saved PNG already succeeds on the validation prompts (the objective's fixed batch of training
prompts, never the held-out ones) wins, and later members skip that image; when none succeeds, the
member whose PNG has the lowest validation loss wins. Both are scored from the saved 8-bit PNG, with
the worst case's own objective and seed, so members with other seeds are compared on one batch.
The winner's PNG is judged on the held-out prompts like any attack's. The record says, per image,
which member won and each member's cost (forward+backward steps, seconds) and validation outcome.

Each member crafts into `members/<name>/` of the run folder with its own attack states, and a member
that finished an image leaves `members/<name>/image_<i>.json`: a resumed worst case skips it.
"""

from __future__ import annotations

import importlib.resources
import json
import time
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from mmsafety.attack_case import AttackBase, AttackCase
from mmsafety.errors import ConfigError
from mmsafety.models.pixels import pil_to_pixels
from mmsafety.records import atomic_write_bytes
from visual_attacks.config import OBJECTIVE_SCHEMAS, AttackConfig, ObjectiveConfig, validate_attack
from visual_attacks.craft import Crafted, CraftedImage, clean_pixels, craft, save_png, validation_success
from visual_attacks.judge import reload_png

# What every member takes from the worst case's own config (the budget axis and how images are batched).
INHERITED = ("eps", "norm", "steps", "images_per_batch", "checkpoint_every", "quantize")


def preset(name: str) -> dict:
    """conf/attack/NAME.yaml with, of its `defaults:` list, only its objective (the job's case and model stay)."""
    path = importlib.resources.files("mmsafety.conf") / "attack" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"attack.members: preset {name!r} is not in conf/attack/; name one of its files, e.g. tool_call")
    data = yaml.safe_load(path.read_text()) or {}
    chosen = [d["objective"] for d in data.pop("defaults", None) or [] if isinstance(d, dict) and "objective" in d]
    if chosen:
        data["objective"] = OmegaConf.merge(objective_node(chosen[0]), data.get("objective") or {})
    return data


def objective_node(name: str):
    """conf/attack/objective/NAME.yaml over the schema its `defaults:` names: what `attack/objective=NAME` composes."""
    path = importlib.resources.files("mmsafety.conf") / "attack" / "objective" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"attack/objective={name}: no conf/attack/objective/{name}.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    schemas = [OBJECTIVE_SCHEMAS[d] for d in data.pop("defaults", None) or [] if d in OBJECTIVE_SCHEMAS]
    return OmegaConf.merge(OmegaConf.structured(schemas[0] if schemas else ObjectiveConfig), data)


def member_attacks(attack) -> list[tuple[str, object]]:
    """(label, attack config) per member, merged as the module docstring says."""
    members, seen = [], set()
    for entry in attack.members:
        entry = dict(OmegaConf.to_container(entry, resolve=True) if OmegaConf.is_config(entry) else entry)
        name = entry.pop("name", None) or entry.get("preset")
        if not name or name in seen:
            raise ConfigError(f"attack.members: {'a member has no name' if not name else f'two members are named {name!r}'}; "
                              f"give each {{name: LABEL, preset: NAME}} a label of its own")
        seen.add(name)
        base = preset(entry.pop("preset")) if entry.get("preset") else {}
        inherited = {k: attack[k] for k in INHERITED}
        merged = OmegaConf.merge(OmegaConf.structured(AttackConfig), base, inherited, entry, {"name": name})
        if merged.get("members"):
            raise ConfigError(f"attack.members: member {name!r} is itself a worst case; list single attacks")
        validate_attack(merged)
        members.append((name, merged))
    if not members:
        raise ConfigError("attack=worst_case needs attack.members: a list of {name: LABEL, preset: NAME}")
    return members


class ValidationScore:
    """An image's validation loss and success under the worst case's own objective, from a saved PNG."""

    def __init__(self, case: AttackCase, adapter, attack):
        self.case, self.adapter, self.attack = case, adapter, attack

    def __call__(self, base: AttackBase, png: Path) -> tuple[float, bool | None]:
        clean = clean_pixels(self.adapter, [base]).to(self.adapter.device)
        objective = self.case.objective(self.adapter, [base], clean, self.attack)
        pixels = self.adapter.to_input_pixels([reload_png(png)]).to(self.adapter.device)
        with torch.no_grad():
            score = objective.validation if getattr(objective, "validation", None) else (lambda px: objective(px, 0))
            loss = float(score(pixels)[0])
            succeeded = validation_success(self.case, self.adapter, objective)
            return loss, (bool(succeeded(pixels)[0]) if succeeded is not None else None)


def craft_worst_case(case: AttackCase, adapter, bases: list[AttackBase], attack, out_dir: Path, indices,
                     log=print, config_sha256: str | None = None) -> Crafted:
    """Run the members per image as the module docstring says; the winners' PNGs saved under out_dir/images."""
    start = time.perf_counter()
    members = member_attacks(attack)
    score = ValidationScore(case, adapter, attack)
    pending = set(indices)
    tried: dict[int, list[dict]] = {i: [] for i in indices}
    pngs: dict[tuple[int, str], Path] = {}
    for name, member in members:
        if not pending:
            break
        folder = out_dir / "members" / name
        done = {i for i in pending if (folder / f"image_{i}.json").exists()}
        if pending - done:
            log(f"worst case: {name} on {len(pending - done)} image(s)")
            crafted = craft(case, adapter, bases, member, folder, sorted(pending - done), log=log,
                            config_sha256=f"{config_sha256}/{name}" if config_sha256 else None)
            for i, image in crafted.images.items():
                loss, success = score(bases[i], image.adversarial_png)
                info = {"attack": name, "steps_run": image.steps_run, "seconds": image.seconds,
                        "validation_loss": loss, "validation_success": success,
                        "png": str(image.adversarial_png.relative_to(out_dir)), "clean_png": str(image.clean_png.relative_to(out_dir))}
                atomic_write_bytes(folder / f"image_{i}.json", json.dumps(info).encode())
        for i in sorted(pending):
            info = json.loads((folder / f"image_{i}.json").read_text())
            tried[i].append(info)
            if info["validation_success"]:
                pending.discard(i)
    result = Crafted({}, {}, 0.0, {"members": [name for name, _ in members]})
    for i in indices:
        runs = tried[i]
        won = next((r for r in runs if r["validation_success"]), None) or min(runs, key=lambda r: r["validation_loss"])
        adversarial = pil_to_pixels(reload_png(out_dir / won["png"]))
        clean = pil_to_pixels(reload_png(out_dir / won["clean_png"]))
        images = out_dir / "images"
        result.images[i] = CraftedImage(save_png(clean, images, i, "clean"), save_png(adversarial, images, i, "adversarial"),
                                        won["validation_loss"], sum(r["steps_run"] for r in runs),
                                        sum(r["seconds"] for r in runs))
        result.details[i] = {"attack_won": won["attack"],
                             "members": [{k: r[k] for k in ("attack", "steps_run", "seconds", "validation_loss",
                                                            "validation_success")} for r in runs]}
    result.seconds = time.perf_counter() - start
    return result
