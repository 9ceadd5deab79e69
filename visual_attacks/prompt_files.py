"""User prompt sets in the formats of Fu et al.'s `data/prompts/`: a text file with one prompt a line
(`image_related_questions*.txt`), or instruction records in JSON, either one record a line or one JSON
list (`image_unrelated_questions*.json`). As their `train_adversarial_image.py` does, records whose
`input` is not empty are skipped (the prompt would need that input) and the `instruction` is the prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mmsafety.errors import ConfigError


def _records(path: Path, text: str) -> list:
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"prompt file {path}: cannot read it ({e.strerror}); give one prompt a line (.txt) "
                          f"or instruction records (.json)") from None
    if path.suffix.lower() not in (".json", ".jsonl"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        records = _records(path, text)
    except ValueError as e:
        raise ConfigError(f"prompt file {path}: not valid JSON ({e}); use a JSON list or one record a line") from None
    prompts = []
    for r in records:
        if isinstance(r, str):
            prompts.append(r.strip())
        elif isinstance(r, dict) and "instruction" in r:
            if not r.get("input"):
                prompts.append(str(r["instruction"]).strip())
        else:
            raise ConfigError(f"prompt file {path}: a record without an `instruction` field: {str(r)[:80]}")
    return [p for p in prompts if p]


def read_prompt_files(paths: Iterable[str]) -> list[str]:
    """The prompts of every file, in order, duplicates kept once."""
    return list(dict.fromkeys(p for path in paths for p in read_prompt_file(path)))
