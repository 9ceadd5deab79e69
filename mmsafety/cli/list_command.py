"""`mmsafety-list models|attacks|tasks|cases|targets|deploys|placements|judges`: what exists, one line
per option: its name, what it is (the first sentence of the preset's own comment, which names the
paper or code it follows), and for models what they can do (generate, score, pixel_loss, embed),
where they come from (built here, a hub checkpoint with its size and whether its files are in the
local cache, or a served endpoint); for attacks the case they bring and their budget.

Presets come from Hydra's search path (conf/ and every plug-in's config package), judges from the
`judge:` entries of the plug-in group, so a plug-in's options are listed without touching this file.
Reads only: nothing is built or downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from importlib import resources
from pathlib import Path

from mmsafety.cli.presets import config_context, group_options, loader, preset_values, selected_groups
from mmsafety.judging import JUDGES
from mmsafety.models.capabilities import capabilities_of
from mmsafety.paths import cache_root
from mmsafety.registry import did_you_mean

# What the user types -> the config group (None: a registry, not a config group).
KINDS = {"models": "model", "attacks": "attack", "tasks": "task", "cases": "case", "targets": "target",
         "deploys": "deploy", "placements": "placement", "judges": None}
SHORT = {"score_choices": "score"}  # capability names as the list shows them

# Parameter counts (billions, rounded) of the real checkpoints the presets name, from each model's
# card on the Hugging Face hub; what a download weighs is about 2 bytes a parameter (bf16/fp16).
PARAMETERS_B = {
    "llava-hf/llava-1.5-7b-hf": 7.1, "llava-hf/llava-1.5-13b-hf": 13.4, "llava-hf/llava-v1.6-mistral-7b-hf": 7.6,
    "Salesforce/blip2-opt-2.7b": 3.9, "Salesforce/instructblip-vicuna-7b": 7.9,
    "HuggingFaceM4/Idefics3-8B-Llama3": 8.5, "google/paligemma-3b-mix-224": 2.9,
    "Qwen/Qwen2-VL-7B-Instruct": 8.3, "Qwen/Qwen2.5-VL-7B-Instruct": 8.3, "HuggingFaceTB/SmolVLM-Instruct": 2.2,
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": 0.15,
}
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SENTENCE_END = re.compile(r"(?<!\bal\.)(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s")  # not after "et al." / "e.g."
MAX_WIDTH = 150  # characters of a description
GENERIC = "Real checkpoint"  # the shared first line of the hub presets: their hub id says more


def preset_comment(group: str, option: str) -> str:
    """The first sentence of the comment block at the top of `group/option.yaml` ('' when none)."""
    text = _preset_text(group, option)
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith(("mmsafety-", "OPENAI_API_KEY", "vllm ")) or line.startswith("#  "):
            break  # a command line shown under the description
        lines.append(body)
    first = SENTENCE_END.split(" ".join(lines), maxsplit=1)[0]
    return first if len(first) <= MAX_WIDTH else first[:MAX_WIDTH - 1].rstrip() + "…"


def describe(group: str, option: str) -> str:
    """The preset's comment, else what it sets (`tasks=[sarcasm]`): one line either way."""
    comment = preset_comment(group, option)
    if comment:
        return comment
    values = {k: v for k, v in preset_values(group, option).items() if k != "name" and not isinstance(v, dict)}
    return " ".join(f"{k}={v}" for k, v in values.items()).replace("'", "")


def _preset_text(group: str, option: str) -> str:
    for source in loader().get_sources():
        relative = f"{group}/{option}.yaml"
        try:
            if source.scheme() == "pkg":
                path = resources.files(source.path).joinpath(relative)
            elif source.scheme() == "file":
                path = Path(source.path) / relative
            else:
                continue
            if path.is_file():
                return path.read_text()
        except (OSError, ModuleNotFoundError):
            continue
    return ""


def hub_files(repo: str) -> tuple[bool, int]:
    """Whether the hub checkpoint `repo` has its config and every weight file in the local Hugging
    Face cache, and their size on disk in bytes (0 when not there). Reads the cache only."""
    from huggingface_hub import try_to_load_from_cache  # optional heavy: only `list models` reads the hub cache

    def cached(name: str) -> str | None:
        found = try_to_load_from_cache(repo, name)
        return found if isinstance(found, str) else None

    config = cached("config.json") or cached("open_clip_config.json")
    weights: list[str | None] = []
    for index in INDEX_FILES:
        if cached(index):
            shards = sorted(set(json.loads(Path(cached(index)).read_text()).get("weight_map", {}).values()))
            weights = [cached(s) for s in shards]
            break
    else:
        weights = [next((cached(w) for w in WEIGHT_FILES if cached(w)), None)]
    if not config or not weights or None in weights:
        return False, 0
    return True, sum(os.path.getsize(w) for w in [config, *weights])


def model_line(option: str) -> str:
    from mmsafety.models.registry import adapter_class  # heavy (torch, the adapter modules): models only

    values = preset_values("model", option)
    try:
        caps = sorted(capabilities_of(adapter_class(str(values.get("adapter")))))
    except Exception:  # an adapter whose module cannot load here (one warning from the registry)
        caps = []
    can = ", ".join(SHORT.get(c, c) for c in caps) or "?"
    where, what = _model_source(values)
    comment = preset_comment("model", option)
    what = " ".join(w for w in (what, "" if comment.startswith(GENERIC) else comment) if w)
    return f"{option:<24} {can:<30} {where:<26} {what}"


def _model_source(values: dict) -> tuple[str, str]:
    """(where its weights are: built here / in cache / served, what they are: a hub id, a URL)."""
    if values.get("builder"):
        return _built(values["builder"], int(values.get("seed") or 0)), ""
    if values.get("base_url"):
        key = values.get("api_key_env")
        return "served", f"{values['base_url']}" + (f" (key in ${key})" if key else "")
    path = str(values.get("name_or_path") or "")
    if not path:
        return "set model.name_or_path", ""
    repo = path.removeprefix("hf-hub:")
    size = PARAMETERS_B.get(repo)
    params = f"{size:g}B, " if size else ""
    if Path(path).expanduser().is_dir():
        return f"{params}local folder", path
    there, nbytes = hub_files(repo)
    return f"{params}{f'in cache {nbytes / 1e9:.1f} GB' if there else 'not in cache'}", repo


def _built(builder: str, seed: int) -> str:
    from mmsafety.organisms.builders import built_path  # heavy: the builders register beside their adapters

    try:
        path = built_path(builder, seed)
    except Exception:
        return f"built here ({builder})"
    return "built, in cache" if (path / "BUILT").exists() else "built on first use"


def attack_line(option: str) -> str:
    values = preset_values("attack", option)
    case = selected_groups("attack", option).get("case", "any (default tool_call)")
    budget = f"{values.get('norm')} eps {values.get('eps')}, {values.get('steps')} steps"
    return f"{option:<20} case={case:<23} {budget:<28} {preset_comment('attack', option)}"


def judge_lines() -> list[str]:
    lines = []
    for name, make in JUDGES.items():  # the plug-in group's `judge:` entries
        doc = (make.__doc__ or "").strip() or _returned_doc(make)
        lines.append(f"{name:<20} {doc.splitlines()[0] if doc else ''}")
    return lines


def _returned_doc(function) -> str:
    """The docstring of the class a judge factory returns (its return annotation)."""
    try:
        returned = typing.get_type_hints(function).get("return")
    except Exception:
        return ""
    return (getattr(returned, "__doc__", None) or "").strip()


def lines_for(kind: str) -> list[str]:
    group = KINDS[kind]
    if group is None:
        return judge_lines()
    with config_context():
        options = group_options(group)
        if group == "model":
            return [model_line(o) for o in options]
        if group == "attack":
            return [attack_line(o) for o in options]
        return [f"{o:<24} {describe(group, o)}" for o in options]


def cache_line() -> str:
    return f"built models and data: {cache_root()} ($MMSAFETY_CACHE overrides it)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsafety-list", description=__doc__.split("\n\n")[0],
        epilog="e.g. mmsafety-list models; then mmsafety-eval model=NAME, mmsafety-attack attack=NAME")
    ap.add_argument("kind", help=" | ".join(KINDS))
    args = ap.parse_args(argv)
    kind = args.kind if args.kind in KINDS else f"{args.kind}s" if f"{args.kind}s" in KINDS else None
    if kind is None:
        print(f"error: {args.kind}: nothing to list{did_you_mean(args.kind, KINDS)}; "
              f"type one of: mmsafety-list {' | '.join(KINDS)}", file=sys.stderr)
        return 2
    if kind == "models":
        print(cache_line())
    for line in lines_for(kind):
        print(line.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
