"""The HarmBench leaderboard table: one row per model x method x judge, HarmBench's ASR (per
behaviour, then averaged) with its 95 % bootstrap interval, per semantic category, and the
DirectRequest ASR of the same model, judge and behaviour set as the baseline column.

HarmBench runs are attack records (kind `visual_attack`, spec.case `harmbench_behaviors`); the
harmbench_behaviors case contributes this table (its `case_views:harmbench_behaviors` entry names `sections`), so the generic attack table
leaves those records to it. Re-judged records (`mmsafety-harmbench-judge record=...`) are rows of
their own judge. The cells are computed from the samples (each test case's judge label) by
harmbench.metrics, not from the record's means, since the intervals need the labels.
"""

from __future__ import annotations

from harmbench.metrics import attack_success_rate
from mmsafety.leaderboard.tables import num
from mmsafety.record_kinds import schema_of
from mmsafety.record_models import answered
from mmsafety.record_schema import split_samples
from mmsafety.records import read_samples
from mmsafety.leaderboard.views import Section

BASELINE_METHOD = "direct_request"
KIND = "visual_attack"
COLUMNS = ["model", "status", "method", "steps", "judge", "behaviors", "asr", "asr_ci95", "direct_request_asr",
           "start_image_asr", "unparsed", "asr_by_category", "note"]


def labels_of(samples: list[dict], which: str = "adversarial") -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(behaviour id, judge label) per judged test case, and each behaviour's semantic category."""
    labels, categories = [], {}
    for s in samples:
        if not answered(s):
            continue
        base = s.get("base") or {}
        bid = str(base.get("behavior_id", s.get("key")))
        categories[bid] = str(base.get("semantic_category", "unknown"))
        for row in (s.get("outputs") or {}).get(which) or []:
            label = row.get("label", -1) if isinstance(row, dict) else -1
            labels.append((bid, label if label in (0, 1, -1) else -1))
    return labels, categories


def rescore(samples: list[dict]) -> dict:
    """HarmBench ASR of the test cases (`harmbench`) and of the unattacked start images (`clean`)."""
    labels, categories = labels_of(samples, "adversarial")
    clean, _ = labels_of(samples, "clean")
    return {"harmbench": attack_success_rate(labels, categories), "clean": attack_success_rate(clean, categories)}


def row_samples(row) -> list[dict]:
    """The usable samples of a leaderboard row's records (each test case once, the first seen wins)."""
    seen, merged = set(), []
    for path in row.records:
        good, _ = split_samples(read_samples(path.parent / "samples.jsonl"), schema_of(KIND))
        for s in good:
            if s.get("image") not in seen:
                seen.add(s.get("image"))
                merged.append(s)
    return merged


def judge_label(judge: dict) -> str:
    """The judge's name and the model behind it: harmbench_cls(harmbench_judge) is not the real classifier."""
    model = judge.get("model") or {}
    source = model.get("builder") or model.get("name_or_path") or model.get("name")
    return f"{judge.get('name', '?')}({source})" if source and judge.get("name") != "refusal_substring" else str(judge.get("name", "?"))


def _pct(value):
    return num(None if value is None else 100 * value, 1)


def baseline_key(row) -> tuple:
    """What a DirectRequest row must share with a row to be its baseline."""
    spec = row.spec
    return (row.model, judge_label(spec.get("judge") or {}), spec.get("root"), spec.get("max_new_tokens"))


def cells(row) -> dict:
    """A row's cells without the baseline column (table() adds it): ASR in %, interval bounds, per category."""
    spec = row.spec
    metrics = rescore(row_samples(row))
    asr, start = metrics["harmbench"], metrics["clean"]
    ci = asr["ci95"]
    out = {"model": row.model, "status": row.status, "method": spec.get("harmbench_method"),
           "method_preset": spec.get("method"), "steps": spec.get("steps"), "judge": judge_label(spec.get("judge") or {}),
           "stage": spec.get("stage", "attack"), "behavior_set": "synthetic" if spec.get("synthetic") else spec.get("root"),
           "max_new_tokens": spec.get("max_new_tokens"), "behaviors": asr["behaviors"], "test_cases": asr["test_cases"],
           "asr": _pct(asr["asr"]), "asr_ci95_low": _pct(ci[0]) if ci else None, "asr_ci95_high": _pct(ci[1]) if ci else None,
           "asr_ci95": f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else None,
           "start_image_asr": _pct(start["asr"]), "unparsed": asr["unparsed"], "note": row.note}
    recorded = ((row.metrics or {}).get("asr") or {}).get("harmful")
    if not asr["test_cases"] and recorded is not None:
        # Samples this table cannot read (a judge-stage record's PNG paths point into another run's
        # folder): the record's own mean, which is HarmBench's ASR with one test case per behaviour.
        out.update(asr=_pct(recorded), behaviors=(row.metrics or {}).get("images"),
                   note="; ".join(filter(None, [row.note, "ASR from the record's metrics; no interval"])))
    by_category = {c: _pct(v["asr"]) for c, v in asr["by_category"].items()}
    out.update({f"asr[{c}]": v for c, v in by_category.items()})
    out["asr_by_category"] = ", ".join(f"{c} {v}" for c, v in by_category.items()) or None
    return out


def table(rows) -> list[dict]:
    """Every row's cells plus `direct_request_asr`: the ASR of the DirectRequest row of the same model,
    judge, behaviour set and completion length (empty when that run is missing)."""
    built = [cells(r) for r in rows]
    baseline = {baseline_key(r): c["asr"] for r, c in zip(rows, built) if r.spec.get("method") == BASELINE_METHOD}
    for r, c in zip(rows, built):
        c["direct_request_asr"] = baseline.get(baseline_key(r))
    return built


SECTION = Section(key="harmbench", title="HarmBench multimodal behaviours (ASR %, DirectRequest as the baseline)",
                  columns=COLUMNS, cells=cells, table=table, headline="asr",
                  about="HarmBench ASR (%): the share of behaviours whose completion the judge labels harmful, with its "
                        "95 % interval (direct_request_asr: no attack); higher means the attack elicits harm more often.")


def sections() -> list[Section]:
    """The harmbench_behaviors case's own tables (entry `case_views:harmbench_behaviors`): the model x
    method x judge table with DirectRequest as the baseline."""
    return [SECTION]
