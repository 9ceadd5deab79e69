"""The judge stage over a craft record: reload every saved test-case PNG, complete the test case's
text (in the record's prompt format) greedily in batches (HarmBench's protocol), write `completions.jsonl`, then any judge can
label that file. This is the split the core's two-stage attacks will use; the attack job's own
per-image judging gives the same completions (tested)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from harmbench.case import completion_prompt
from harmbench.completions import generate_completions
from mmsafety.errors import UserError
from mmsafety.records import atomic_write_text, read_samples
from mmsafety.record_models import answered


def complete_record(record_dir: str | Path, adapter, max_new_tokens: int = 512, batch_size: int = 8,
                    which: str = "adversarial_png") -> Path:
    """completions.jsonl in `record_dir`: one line per saved test case, in the samples' order."""
    record_dir = Path(record_dir)
    samples = [s for s in read_samples(record_dir / "samples.jsonl") if answered(s) and s.get(which)]
    if not samples:
        raise UserError(f"{record_dir}: no finished test cases in samples.jsonl; run mmsafety-attack case=harmbench_behaviors first")
    images = []
    for s in samples:
        path = (record_dir / s[which]).resolve()
        if not path.is_relative_to(record_dir.resolve()):
            raise UserError(f"{record_dir}: sample {s.get('key')} names an image outside the record folder")
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    spec = json.loads((record_dir / "record.json").read_text(encoding="utf-8")).get("spec", {}) \
        if (record_dir / "record.json").is_file() else {}
    prompt_format = spec.get("prompt_format", "chat_template")  # records before the option: the chat template
    prompts = [completion_prompt(s["base"].get("test_case", s["base"]["behavior"]), prompt_format) for s in samples]
    generations = generate_completions(adapter, images, prompts, max_new_tokens, batch_size)
    lines = [json.dumps({"behavior_id": s["base"]["behavior_id"], "test_case": [s[which], s["base"].get("test_case", p)],
                         "generation": g}) for s, p, g in zip(samples, prompts, generations)]
    out = record_dir / "completions.jsonl"
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return out
