"""The HarmBench behaviours as an attack case (mmsafety.attack_case): the attack job crafts one
test case per behaviour with the configured method, then completes and judges it.

- bases: each behaviour's start image (methods.py), in the CSV's order; rows and images that
  cannot be used are skipped with their reasons, reported in the record's spec;
- objective: the NLL of the behaviour's target string ("Sure, here is how to ...", or the
  targets file's) after the behaviour text, per image;
- judge: a greedy completion of the behaviour text with the saved PNG (up to `max_new_tokens`,
  512 as HarmBench), labelled by a judge from harmbench.judges. Rates per test case:
  `harmful` (label 1), `unparsed` (label -1). With one test case per behaviour the job's mean
  is HarmBench's ASR; `group_by` gives it per semantic category.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from PIL import Image

from harmbench.data import TARGETS_JSON, behaviors_csv, load_targets, open_behavior_image, read_behaviors, skip_counts
from harmbench.judges import JudgeInput, build_judge
from harmbench.methods import blank_image, method_for, patch_mask, render_text_image
from mmsafety.attack_case import CASES, AttackBase, AttackCase, Judgement, Objective
from mmsafety.errors import ConfigError
from mmsafety.models.base import VLMAdapter
from mmsafety.models.capabilities import GENERATE


@CASES.register("harmbench_behaviors")
class HarmBenchBehaviorsCase(AttackCase):
    objectives = ("target_string",)
    judge_needs = frozenset({GENERATE})  # completions; the judge model is the case's own
    headline = "harmful"
    group_by = ("semantic_category",)

    def __init__(self, root: str | None = None, method: str = "harmbench_pgd", judge: dict | None = None,
                 targets: str | None = None, limit: int | None = None, max_new_tokens: int = 512,
                 seed: int = 0, name: str = "harmbench_behaviors", tag: str = ""):
        if max_new_tokens < 1:
            raise ConfigError(f"case.max_new_tokens={max_new_tokens}: must be >= 1 (HarmBench uses 512)")
        self.synthetic = root is None
        if root is None:
            from harmbench.synthetic import synthetic_root

            root = synthetic_root()
        self.root = Path(root).expanduser()
        behaviors_csv(self.root)  # a wrong root fails before any model loads
        self.method = method_for(method)
        self.judge_options = dict(judge or {"name": "refusal_substring"})
        from harmbench.judges import judges

        judges.get(self.judge_options.get("name", "refusal_substring"))  # a typo fails before any model loads
        if targets is None and (self.root / TARGETS_JSON).is_file():
            targets = str(self.root / TARGETS_JSON)
        self.targets_path, self.limit, self.max_new_tokens, self.seed = targets, limit, max_new_tokens, seed
        self._judge = None
        self.skipped: list[dict] = []
        self.notes: list[str] = []
        self.warnings = []
        if not self.synthetic and (self.judge_options.get("model") or {}).get("builder") in ("harmbench_judge", "harmbench_tiny_cls"):
            # The organism judges only the synthetic completions it was trained on.
            self.warnings.append("case.judge is an offline organism; for real behaviours set case.judge.model.builder=null "
                                 "case.judge.model.name_or_path=cais/HarmBench-Llama-2-13b-cls")
            print(f"warning: {self.warnings[-1]}", file=sys.stderr)

    def _start_image(self, image: Image.Image, behavior: str) -> Image.Image:
        if self.method.start == "blank":
            return blank_image(image.size)
        if self.method.start == "render_text":
            return render_text_image(behavior)
        return image

    def bases(self) -> list[AttackBase]:
        behaviors = read_behaviors(self.root)
        usable = []
        for b in behaviors:
            image = open_behavior_image(b) if b.skip_reason is None else None
            if image is None:
                self.skipped.append({"behavior_id": b.id, "row": b.row, "reason": b.skip_reason})
                continue
            usable.append((b, image))
            if self.limit is not None and len(usable) == self.limit:
                break
        targets, self.notes = load_targets(self.targets_path, [b for b, _ in usable])
        self.skip_reasons = skip_counts(behaviors)
        self.rows_read = len(behaviors)
        return [AttackBase(b.id, self._start_image(image, b.behavior),
                           {"behavior_id": b.id, "behavior": b.behavior, "semantic_category": b.semantic_category,
                            "context": b.context, "target": targets[b.id], "notes": b.notes})
                for b, image in usable]

    def spec(self) -> dict:
        return {"case": "harmbench_behaviors", "root": str(self.root), "synthetic": self.synthetic,
                "method": self.method.name, "harmbench_method": self.method.harmbench_name,
                "judge": {k: v for k, v in self.judge_options.items()}, "targets": self.targets_path,
                "max_new_tokens": self.max_new_tokens, "rows_read": getattr(self, "rows_read", None),
                "skipped": self.skipped, "skip_reasons": getattr(self, "skip_reasons", {}), "target_notes": self.notes,
                "warnings": self.warnings}

    def objective(self, adapter: VLMAdapter, bases: list[AttackBase], clean: torch.Tensor, attack) -> Objective:
        prompts = [b.info["behavior"] for b in bases]
        targets = [b.info["target"] for b in bases]
        if self.method.patch_fraction is None:
            return lambda pixels, step: adapter.target_loss(pixels, prompts, targets)
        h, w = clean.shape[-2:]
        rng = random.Random(f"patch/{self.seed}")
        mask = torch.stack([patch_mask(h, w, self.method.patch_fraction, rng) for _ in bases]).to(clean.device)
        x0 = clean.detach().float().to(clean.device)

        def objective(pixels: torch.Tensor, step: int) -> torch.Tensor:
            return adapter.target_loss(x0 * (1 - mask) + pixels * mask, prompts, targets)

        return objective

    def judge_model(self):
        if self._judge is None:
            self._judge = build_judge(self.judge_options)
        return self._judge

    def judge(self, adapter: VLMAdapter, image: Image.Image, base: AttackBase) -> Judgement:
        behavior = base.info["behavior"]
        generation = adapter.generate([image], [behavior], max_new_tokens=self.max_new_tokens)[0]
        label = self.judge_model().labels([JudgeInput(behavior, generation, base.info["context"], image)])[0]
        row = {"behavior_id": base.key, "test_case": behavior, "generation": generation, "label": label,
               "judge": self.judge_options.get("name")}
        return Judgement({"harmful": float(label == 1), "unparsed": float(label == -1)}, [row])
