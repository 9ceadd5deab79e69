"""Find a checkpoint on disk (local folder or the Hugging Face cache), refuse unsafe formats,
fingerprint its weights, and turn loading failures into one actionable line."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmsafety.errors import ModelNotFound, UnsafeCheckpoint, UserError
from mmsafety.paths import cache_dir
from mmsafety.records import atomic_write_text

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class LoadOptions:
    allow_pickle: bool = False       # pickle checkpoints can execute code when loaded
    trust_remote_code: bool = False  # never run a repository's Python unless asked
    revision: str | None = None
    local_files_only: bool = False   # also implied by HF_HUB_OFFLINE=1


def offline(opts: LoadOptions) -> bool:
    return opts.local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hf_cache_location() -> str:
    # heavy, deferred to when this runs: huggingface_hub
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def local_checkpoint(source: str, opts: LoadOptions) -> Path | None:
    """A folder holding `source`: the path itself, or its snapshot in the HF cache; None if neither."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise ModelNotFound(f"model path {source} is not a folder with a checkpoint; point model.name_or_path at one")
    # heavy, deferred to when this runs: huggingface_hub
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source, revision=opts.revision, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def not_found(source: str) -> ModelNotFound:
    return ModelNotFound(
        f"model {source!r} not found: looked for a local folder of that name and in the Hugging Face cache "
        f"({hf_cache_location()}); download it with `huggingface-cli download {source}` on a machine with "
        f"network access, or set model.name_or_path to a folder that holds it"
    )


def check_weight_format(folder: Path, opts: LoadOptions) -> None:
    names = [p.name for p in folder.iterdir()]
    has_safe = any(n.endswith(SAFE_SUFFIXES) for n in names)
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles and not has_safe and not opts.allow_pickle:
        raise UnsafeCheckpoint(
            f"{folder} holds only pickle weights ({', '.join(pickles[:3])}), which can run code when loaded; "
            f"convert them to safetensors, or set model.allow_pickle=true if you trust their source"
        )


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes. The HF cache names blobs by their sha256, so those are free;
    other files are hashed once and remembered by (path, size, mtime)."""
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and len(target.name) == 64:
        return target.name
    stat = target.stat()
    memo_path = cache_dir() / "sha256_memo.json"
    key = f"{target}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        h = hashlib.sha256()
        with open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        memo[key] = h.hexdigest()
        atomic_write_text(memo_path, json.dumps(memo))
    return memo[key]


def weights_sha256(folder: Path) -> str:
    """One hash over all weight files of a checkpoint (name and content of each)."""
    h = hashlib.sha256()
    for p in weight_files(folder):
        h.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return h.hexdigest()


def resolve_checkpoint(source: str, opts: LoadOptions) -> Path | str:
    """The local folder to load from; the hub id itself only when online and not cached."""
    folder = local_checkpoint(source, opts)
    if folder is None:
        if offline(opts):
            raise not_found(source)
        return source
    check_weight_format(folder, opts)
    return folder


def load_hf_vlm(model_class_name: str | dict[str, str], source: str, opts: LoadOptions, placement):
    """(model, processor, weights sha256) of a transformers VLM through `from_pretrained`, with
    mmsafety's rules: offline resolution, safetensors unless allowed, no remote code unless set,
    one-line errors. `model_class_name` is a transformers class (LlavaForConditionalGeneration, ...),
    or a map from the checkpoint's `model_type` to one, for adapters that serve several."""
    # heavy, deferred to when this runs: transformers
    import transformers
    from transformers import AutoConfig, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where = resolve_checkpoint(source, opts)
    common = dict(revision=opts.revision, trust_remote_code=opts.trust_remote_code)
    try:
        if isinstance(model_class_name, dict):
            model_type = AutoConfig.from_pretrained(where, **common).model_type
            if model_type not in model_class_name:
                raise UserError(f"{source} is a {model_type} checkpoint; this adapter loads {', '.join(model_class_name)}")
            model_class_name = model_class_name[model_type]
        processor = AutoProcessor.from_pretrained(where, **common)
        model = getattr(transformers, model_class_name).from_pretrained(
            where, dtype=placement.dtype, use_safetensors=not opts.allow_pickle,
            device_map=placement.device_map, **common)
    except OSError as e:
        if isinstance(where, Path):
            raise ModelNotFound(f"could not load {source} from {where}: {str(e).splitlines()[0]}") from None
        raise not_found(source) from None
    if placement.device_map is None:
        model.to(placement.device)
    folder = where if isinstance(where, Path) else resolve_checkpoint(source, LoadOptions(local_files_only=True))
    return model, processor, weights_sha256(folder)
