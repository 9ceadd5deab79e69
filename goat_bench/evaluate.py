"""Run GOAT-Bench on one model: stream per-meme results to samples.jsonl, resume, score, report."""

from __future__ import annotations

import math
import time
from pathlib import Path

from goat_bench.data import NO_IMAGE, MemeSample, load_task, with_images
from goat_bench.metrics import overall, task_metrics
from goat_bench.parsing import parse_answer
from goat_bench.prompts import TEMPLATES
from goat_bench.tasks import TASKS
from mmsafety.cli.lifecycle import note_invocation
from mmsafety.config import plain
from mmsafety.errors import ConfigError, UserError
from mmsafety.models.base import ModelAdapter
from mmsafety.models.context import answer_length, too_long
from mmsafety.numbers import interval, pct
from mmsafety.oom import HalvingBatcher
from mmsafety.paths import cache_dir
from mmsafety.preemption import SaveOnSignal
from mmsafety.progress import progress
from mmsafety.records import RunRecord
from mmsafety.record_models import answered
from mmsafety.served.errors import SampleErrors
from mmsafety.shards import shard_of
from mmsafety.synthetic.memes import write_goat_layout

KEY = ("task", "id")


def synthetic_root(per_task: int) -> Path:
    """The offline sample: synthetic held-out memes in the GOAT-Bench layout, built once."""
    return write_goat_layout(cache_dir() / "data" / f"goat-synthetic-heldout-n{per_task}", per_task, "heldout")


def check_task_config(task_cfg, scoring: str) -> None:
    unknown = [t for t in task_cfg.tasks if t not in TASKS]
    if unknown or not task_cfg.tasks:
        raise ConfigError(f"task.tasks={list(task_cfg.tasks)}: use GOAT-Bench tasks from {', '.join(TASKS)}")
    if task_cfg.prompt not in TEMPLATES:
        raise ConfigError(f"task.prompt={task_cfg.prompt}: use one of {', '.join(TEMPLATES)}")
    if scoring == "logprob" and task_cfg.prompt == "cot":
        raise ConfigError("task.prompt=cot needs scoring=generate (the verdict comes after the reasoning)")


def _per_sample(method, *args, **kwargs) -> tuple[list, list]:
    """(results, failure reasons) of a batched model call. A served model reports requests that
    failed after their retries in SampleErrors: those samples become errors, never answers."""
    try:
        results = method(*args, **kwargs)
    except SampleErrors as e:
        return e.results, e.reasons
    return list(results), [None] * len(results)


def _logprob_result(yes: float, no: float) -> dict:
    """A served model scores Yes/No from its top-k first tokens: one missing from the top-k (-inf)
    is below every token listed, so the other wins; both missing is an invalid answer."""
    missing = [name for name, v in (("Yes", yes), ("No", no)) if math.isinf(v)]
    result = {"logprob_yes": None if math.isinf(yes) else yes, "logprob_no": None if math.isinf(no) else no,
              "pred": None if len(missing) == 2 else int(yes > no), "parse": "logprob"}
    if missing:
        result["missing_from_top_k"] = missing
    return result


def _score_batch(adapter, batch: list[tuple[MemeSample, object]], template, scoring: str, max_new_tokens: int) -> list[dict]:
    images = [im for _, im in batch]
    prompts = [template.render(s.task, s.text) for s, _ in batch]
    if scoring == "logprob":
        rows, reasons = _per_sample(adapter.choice_logprobs, images, prompts, ["Yes", "No"])
        return [{"status": "error", "reason": why} if why else _logprob_result(*row.tolist())
                for row, why in zip(rows, reasons)]
    answers, reasons = _per_sample(adapter.generate, images, prompts, max_new_tokens=max_new_tokens)
    out = []
    for (s, _), answer, why in zip(batch, answers, reasons):
        if why:
            out.append({"status": "error", "reason": why})
            continue
        parsed = parse_answer(answer, template.adjective_for(s.task))
        out.append({"answer": answer, "pred": parsed.label, "parse": parsed.reason})
    return out


def image_workers(cfg, adapter: ModelAdapter) -> int:
    """Threads that decode images ahead of scoring: `cfg.image_workers`, or by default 4 when the
    model runs on a GPU (the CPU is otherwise idle while it computes) and none on a CPU, where
    decoding would compete with the model for the same cores."""
    if cfg.image_workers is not None:
        return cfg.image_workers
    return 4 if str(getattr(adapter, "device", "cpu")).startswith("cuda") else 0


def evaluate(cfg, adapter: ModelAdapter, record: RunRecord, log=print) -> dict:
    scoring = plain(cfg.scoring)
    check_task_config(cfg.task, scoring)
    template = TEMPLATES[cfg.task.prompt]
    max_new_tokens = cfg.max_new_tokens or template.max_new_tokens
    root = Path(cfg.task.root).expanduser() if cfg.task.root else synthetic_root(cfg.task.synthetic_per_task)
    image_root = cfg.task.get("image_root")
    if image_root and not Path(image_root).expanduser().is_dir():
        raise UserError(f"task.image_root={image_root} is not a folder: give the folder that holds the images' "
                        f"paths (for hatefulness, Facebook's Hateful Memes folder that holds img/)")
    samples = []
    for task in cfg.task.tasks:
        loaded = load_task(root, task, image_root)
        no_image = [s.skip_reason for s in loaded if s.skip_reason and s.skip_reason.startswith(NO_IMAGE)]
        if no_image:  # said once per task, before the run: all 2,000 hatefulness memes without task.image_root
            log(f"{task}: {len(no_image)} of {len(loaded)} memes will be skipped: {no_image[0]}")
        samples += loaded[: cfg.task.limit] if cfg.task.limit else loaded
    if cfg.num_shards > 1:
        samples = [s for s in samples if shard_of(f"{s.task}/{s.id}", cfg.num_shards) == cfg.shard]
    record.update(
        model={"name": cfg.model.name, "id": adapter.model_id, "adapter": adapter.name, "weights_sha256": adapter.weights_sha256},
        spec={"workload": "goat_bench", "tasks": list(cfg.task.tasks), "root": str(root), "synthetic": not cfg.task.root,
              "image_root": str(Path(image_root).expanduser()) if image_root else None,
              "scoring": scoring, "prompt": {"name": template.name, "version": template.version, "sha256": template.sha256},
              "max_new_tokens": max_new_tokens, "batch_size": cfg.batch_size,
              "shard": {"index": cfg.shard, "count": cfg.num_shards},
              "sample_key": list(KEY)},
    )
    if scoring == "logprob" and hasattr(adapter, "check_logprobs"):
        adapter.check_logprobs()  # a served model whose server returns no logprobs: one line, before any meme
    done = record.done_keys(KEY)  # answered or skipped; memes that errored before are not done (RunRecord)
    todo = [s for s in samples if (s.task, s.id) not in done]
    retried = f"; {record.retried_errors} that errored before are sent again" if record.retried_errors else ""
    log(f"{len(samples)} memes in {len(cfg.task.tasks)} task(s) from {root}; "
        f"{len(samples) - len(todo)} already done{retried}")
    # Similar lengths together: less padding per batch. Sorting is deterministic, so a resumed run
    # walks the same order.
    todo.sort(key=lambda s: (len(s.text), s.task, s.id))
    correct = scored = 0
    start = time.perf_counter()
    bar = progress(len(samples), f"{cfg.model.name} {scoring}", "meme", initial=len(samples) - len(todo))
    pending: list[tuple[MemeSample, object]] = []
    # Out of memory halves the batch (kept for the rest of the run). A meme that runs out of memory
    # alone is an error, not a skip: the reason is the card (its size, a neighbour on it), not the
    # data, so the run ends partial and the same command sends it again (RunRecord retries errors).
    batcher = HalvingBatcher(cfg.batch_size)
    answer_tokens = max_new_tokens if scoring == "generate" else answer_length(adapter, ["Yes", "No"])

    def skip(s: MemeSample, reason: str) -> None:
        record.add_sample({"task": s.task, "id": s.id, "status": "skipped", "reason": reason,
                           "label": s.label, "notes": s.notes})

    def flush():
        nonlocal correct, scored
        score = lambda chunk: _score_batch(adapter, chunk, template, scoring, max_new_tokens)
        for (s, _), (result, reason) in zip(pending, batcher.run(score, pending)):
            if result is None:  # out of memory alone: an error sample like a served failure
                result = {"status": "error", "reason": reason}
            if result.get("status") == "error":
                record.add_sample({"task": s.task, "id": s.id, **result, "label": s.label, "notes": s.notes})
                continue
            ok = result["pred"] == s.label
            correct, scored = correct + ok, scored + 1
            record.add_sample({"task": s.task, "id": s.id, "status": "ok", "label": s.label, **result,
                               "correct": ok, "notes": s.notes})
        bar.set_postfix(acc=f"{100 * correct / max(1, scored):.1f}%", refresh=False)
        bar.update(len(pending))  # one refresh per batch, with the new accuracy
        pending.clear()
        note_invocation(record, adapter)  # a served model's accounting, added to earlier invocations'
        record.checkpoint()

    def stop_here() -> None:  # every meme scored so far is in samples.jsonl: the requeued job goes on after them
        note_invocation(record, adapter, "partial")
        record.write()
        log(f"{held.held}: stopping after {len(record.samples)} of {len(samples)} memes (all written); the same "
            f"run resumes from there")

    # A cluster's warning (SIGUSR2) or preemption (SIGTERM) is held to the next meme boundary, so a batch
    # being scored (or paid for, on a served model) is written, not lost (mmsafety.preemption).
    with SaveOnSignal() as held:
        try:
            for s, image in with_images(todo, image_workers(cfg, adapter)):
                held.stop_here(stop_here)
                too_big = too_long(adapter, template.render(s.task, s.text), answer_tokens) if image is not None else None
                if image is None or too_big:
                    skip(s, too_big or s.skip_reason)
                    bar.update(1)
                    continue
                pending.append((s, image))
                if len(pending) >= cfg.batch_size:
                    flush()
            if pending:
                flush()
        finally:
            bar.close()
    elapsed = time.perf_counter() - start
    record.update(execution={"batch_size": cfg.batch_size, "final_batch_size": batcher.batch_size,
                             "halvings": batcher.halvings})
    if batcher.halvings:
        log(f"out of memory: batch size lowered from {cfg.batch_size} to {batcher.batch_size}")
    metrics = score_samples(record.samples, list(cfg.task.tasks), seed=cfg.seed)
    metrics["throughput"] = {"memes": scored, "seconds": round(elapsed, 3), "memes_per_s": scored / elapsed if elapsed else None}
    return metrics


def score_samples(samples: list[dict], tasks: list[str], seed: int = 0) -> dict:
    """Metrics from the samples file alone, so a record can be re-scored without the model."""
    per_task = {}
    for task in tasks:
        ok = [s for s in samples if s["task"] == task and answered(s)]
        per_task[task] = task_metrics([s["label"] for s in ok], [s["pred"] for s in ok], seed=seed)
        per_task[task]["skipped"] = sum(1 for s in samples if s["task"] == task and s.get("status") == "skipped")
        per_task[task]["errors"] = sum(1 for s in samples if s["task"] == task and s.get("status") == "error")
    metrics = {"per_task": per_task, "overall": overall(per_task)}
    # Metrics are over the answered memes; the errored ones are counted beside them, never scored.
    metrics["overall"]["errors"] = sum(m["errors"] for m in per_task.values())
    # The paper's Overall covers all five tasks; one without a scored meme is named, never silently dropped.
    metrics["overall"]["missing_tasks"] = missing_tasks(per_task)
    missing = [s["missing_from_top_k"] for s in samples if answered(s) and s.get("missing_from_top_k")]
    if missing:  # a served model's logprob scoring: how often Yes or No was not among the top-k tokens
        metrics["missing_from_top_k"] = {"samples": len(missing), "Yes": sum("Yes" in m for m in missing),
                                         "No": sum("No" in m for m in missing), "both": sum(len(m) == 2 for m in missing)}
    return metrics


def missing_tasks(per_task: dict) -> list[str]:
    """The GOAT-Bench tasks (of the paper's five) with no scored meme in `per_task`."""
    return [t for t in TASKS if not (per_task.get(t) or {}).get("n")]


def overall_label(missing: list[str]) -> str:
    """"overall", or "overall (4/5)" when it lacks tasks: a partial Overall is never called plain Overall."""
    return "overall" if not missing else f"overall ({len(TASKS) - len(missing)}/{len(TASKS)})"


def rescore(samples: list[dict], record: dict) -> dict:
    """Metrics of a (merged) record from its samples alone: what the leaderboard calls."""
    return score_samples(samples, list(record["spec"]["tasks"]), seed=record.get("seeds", {}).get("seed", 0))


def format_table(metrics: dict) -> str:
    """Acc / macro-F1 per task and Overall, as in the paper's Table 2."""
    per_task = metrics["per_task"]
    cols = list(per_task) + (["overall"] if len(per_task) > 1 else [])
    missing = metrics["overall"].get("missing_tasks", missing_tasks(per_task))
    head = f"{'in %':14}" + "".join(f"{overall_label(missing) if c == 'overall' else c:>16}" for c in cols)
    row = f"{'Acc / F1':14}"
    for c in cols:
        m = metrics["overall"] if c == "overall" else per_task[c]
        row += f"{pct(m['accuracy']):>8}/{pct(m['macro_f1']):<7}" if m.get("n") else f"{'-':>16}"
    lines = [head, row]
    for name, key in (("Acc 95% CI", "accuracy"), ("F1 95% CI", "macro_f1")):  # one decimal, as the rule
        cis = [interval((per_task[c].get("ci95") or {}).get(key)) if c != "overall" else None for c in cols]
        if any(cis):
            lines.append(f"{name:14}" + "".join(f"{ci or '':>16}" for ci in cis))
    lines.append(f"{'n (skipped)':14}" + "".join(
        f"{(str(per_task[c]['n']) + ' (' + str(per_task[c]['skipped']) + ')') if c != 'overall' else str(metrics['overall'].get('n', 0)):>16}"
        for c in cols))
    if any(per_task[c].get("errors") for c in per_task):  # memes with no answer: not in Acc / F1 above
        lines.append(f"{'errors':14}" + "".join(
            f"{per_task[c].get('errors', 0) if c != 'overall' else metrics['overall'].get('errors', ''):>16}"
            for c in cols))
    lines.append(f"{'invalid %':14}" + "".join(
        f"{per_task[c].get('invalid_rate', 0):>16.1f}" if c != "overall" else f"{'':>16}" for c in cols))
    if "overall" in cols and missing:
        lines.append(f"{overall_label(missing)} lacks {', '.join(missing)} (no meme scored): not the paper's Overall, "
                     f"which covers all {len(TASKS)} tasks")
    return "\n".join(lines)
