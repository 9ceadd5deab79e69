"""Reliability, round 2: hostile inputs that used to crash a run or the leaderboard.

Each test pins one case of the issue: a recursion bomb in a task file, a caption far past the
model's context, out of memory in a batch, untrusted records, attack configs that cannot work,
a loader that was too lenient; and property-based fuzzing of records, samples and numeric
configs. No input may produce a traceback; every problem is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from goat_bench.data import load_task
from mmsafety.errors import ConfigError, UserError
from mmsafety.records import read_samples

BOMB = "[" * 200_000 + "]" * 200_000  # RecursionError in json.loads


def write_task(root: Path, task: str, lines: list[bytes]) -> Path:
    (root / task / "img").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / task / "img" / "a.png")
    (root / task / "test.jsonl").write_bytes(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
    return root


def meme(sid, label=1, text="a caption", img="img/a.png") -> bytes:
    return json.dumps({"id": sid, "img": img, "text": text, "label": label}).encode()


# -- 1. deeply nested JSON in a task file -------------------------------------------------

def test_recursion_bomb_line_in_a_task_file_is_skipped_with_its_reason(tmp_path):
    root = write_task(tmp_path, "sarcasm", [meme("before"), BOMB.encode(), b'{"id": ' + b"9" * 5000 + b"}", meme("after")])
    samples = load_task(root, "sarcasm")
    reasons = {s.id: s.skip_reason for s in samples}
    assert len(samples) == 4
    assert reasons["before"] is None and reasons["after"] is None
    assert reasons["line-2"] == "line is nested deeper than 64 levels"
    assert reasons["line-3"] == "line is not readable"


def test_recursion_bomb_json_array_file_is_one_line(tmp_path):
    (tmp_path / "misogyny").mkdir()
    (tmp_path / "misogyny" / "test.json").write_text(BOMB)
    with pytest.raises(UserError, match=r"test.json: nested deeper than 64 levels; fix or re-extract the file"):
        load_task(tmp_path, "misogyny")


def test_safe_json_turns_every_decoding_failure_into_a_reason():
    from mmsafety.safe_json import JSONRejected, loads, loads_object

    assert loads(json.dumps({"a": "[" * 72})) == {"a": "[" * 72}  # brackets inside a string are text
    assert loads('{"psnr": Infinity}') == {"psnr": float("inf")}  # our own records hold inf
    for bad, reason in [(BOMB, "nested deeper"), ("1" * 5000, "over 4300 digits"), (b"\xff\xfe", "not UTF-8"),
                        ("{", "not valid JSON"), ("{" * 70 + "}" * 70, "nested deeper")]:
        with pytest.raises(JSONRejected, match=reason):
            loads(bad)
    with pytest.raises(JSONRejected, match="a JSON list, not an object"):
        loads_object("[1]")


# -- 2. a caption far past the model's context --------------------------------------------

def test_context_length_and_prompt_length_come_from_the_model(organism):
    from mmsafety.models.context import context_length, prompt_length, too_long

    assert context_length(organism) == organism.model.config.text_config.max_position_embeddings == 512
    short = prompt_length(organism, "Is this meme hateful?")
    assert short == len(organism.prompt_ids("Is this meme hateful?")) and short > organism.image_tokens
    assert too_long(organism, "Is this meme hateful?", 2) is None
    huge = " ".join(["word"] * 200_000)
    reason = too_long(organism, huge, 2)
    assert reason.startswith("prompt too long for the model: ") and "> context of 512" in reason
    assert int(reason.split(": ")[1].split(" tokens")[0]) > 200_000  # the real length, not a truncated one


@pytest.mark.slow
def test_caption_past_the_context_is_skipped_before_the_model(tmp_path, monkeypatch, organism):
    from goat_bench.cli import run_eval
    from mmsafety.models.llava import LlavaAdapter

    seen_lengths = []
    real = LlavaAdapter.choice_logprobs

    def spy(self, images, prompts, choices):
        seen_lengths.extend(len(p.split()) for p in prompts)
        return real(self, images, prompts, choices)

    monkeypatch.setattr(LlavaAdapter, "choice_logprobs", spy)
    long_caption = " ".join(["hate"] * 200_000)
    root = write_task(tmp_path / "data", "hatefulness",
                      [meme("short", text="a short caption"), meme("long", text=long_caption), meme("short2", label=0)])
    metrics, record_path = run_eval(tmp_path / "run", "task=goat_hatefulness", f"task.root={root}")
    samples = {s["id"]: s for s in read_samples(Path(record_path).parent / "samples.jsonl")}
    assert samples["long"]["status"] == "skipped" and "prompt too long" in samples["long"]["reason"]
    assert "context of 512" in samples["long"]["reason"]
    assert samples["short"]["status"] == samples["short2"]["status"] == "ok"
    assert max(seen_lengths) < 1000  # the long caption never reached the model
    assert metrics["per_task"]["hatefulness"]["n"] == 2 and metrics["per_task"]["hatefulness"]["skipped"] == 1


# -- 3. out of memory in a batch ----------------------------------------------------------

def test_halving_batcher_retries_down_to_one_and_skips_what_does_not_fit_alone():
    from mmsafety.oom import HalvingBatcher, is_out_of_memory

    calls = []

    def score(chunk):
        calls.append(list(chunk))
        if len(chunk) > 3 or "huge" in chunk:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 160.00 GiB")
        return [x.upper() for x in chunk]

    batcher = HalvingBatcher(16)
    items = [f"m{i}" for i in range(9)] + ["huge"] + ["m9"]
    out = batcher.run(score, items)
    assert [r for r, _ in out] == [x.upper() for x in items[:9]] + [None, "M9"]
    assert out[9][1].startswith("out of memory with this sample alone (CUDA out of memory")
    # 11 items: 11 -> 5 -> 2 (pairs fit), then the pair holding "huge" -> 1; it only shrinks
    assert [len(c) for c in calls] == [11, 5, 2, 2, 2, 2, 2, 1, 1, 1]
    assert batcher.batch_size == 1 and batcher.halvings == 3
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 171798691840 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(ValueError):  # anything else propagates
        HalvingBatcher(4).run(lambda chunk: (_ for _ in ()).throw(ValueError("bug")), [1, 2])


@pytest.mark.slow
def test_out_of_memory_in_goat_scoring_halves_the_batch_and_errors_the_meme_that_never_fits(tmp_path, monkeypatch, organism):
    from goat_bench.cli import run_eval
    from mmsafety.models.llava import LlavaAdapter

    real = LlavaAdapter.choice_logprobs
    sizes = []
    card = {"tight": True}

    def tight_memory(self, images, prompts, choices):
        sizes.append(len(prompts))
        if card["tight"] and (len(prompts) > 4 or any("enormous" in p for p in prompts)):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 39.00 GiB")
        return real(self, images, prompts, choices)

    monkeypatch.setattr(LlavaAdapter, "choice_logprobs", tight_memory)
    lines = [meme(f"m{i}", label=i % 2) for i in range(20)] + [meme("big", text="an enormous meme")]
    root = write_task(tmp_path / "data", "sarcasm", lines)
    args = ("task=goat_sarcasm", f"task.root={root}", "batch_size=16")
    metrics, record_path = run_eval(tmp_path / "run", *args)
    record = json.loads(Path(record_path).read_text())
    samples = read_samples(Path(record_path).parent / "samples.jsonl")
    # Out of memory alone is the card's doing, not the meme's: an error (the run is partial), not a skip
    assert record["status"] == "partial"
    assert record["execution"] == {"batch_size": 16, "final_batch_size": 4, "halvings": 2}
    assert len(samples) == 21 and len({s["id"] for s in samples}) == 21
    big = next(s for s in samples if s["id"] == "big")
    assert big["status"] == "error" and big["reason"].startswith("out of memory with this sample alone")
    assert metrics["per_task"]["sarcasm"]["n"] == 20 and metrics["per_task"]["sarcasm"]["skipped"] == 0
    assert metrics["per_task"]["sarcasm"]["errors"] == 1
    assert max(sizes[-5:]) <= 4

    # The same command on a card with room sends the errored meme again, and only it
    card["tight"], sizes[:] = False, []
    metrics, record_path = run_eval(tmp_path / "run", *args)
    record = json.loads(Path(record_path).read_text())
    samples = read_samples(Path(record_path).parent / "samples.jsonl")
    assert record["status"] == "completed"
    assert sizes == [1]
    assert len(samples) == 21 and next(s for s in samples if s["id"] == "big")["status"] == "ok"
    retried = read_samples(Path(record_path).parent / "samples.retried.jsonl")
    assert [s["id"] for s in retried] == ["big"] and retried[0]["status"] == "error"
    assert metrics["per_task"]["sarcasm"]["n"] == 21 and metrics["per_task"]["sarcasm"]["errors"] == 0


@pytest.mark.slow
def test_out_of_memory_in_an_attack_halves_the_images_then_says_what_to_lower(tmp_path, monkeypatch, organism):
    import visual_attacks.craft as attack_run
    from visual_attacks.cli import run_attack_job

    real_pgd = attack_run.pgd
    batches = []

    def pgd_with_room_for(limit):
        def pgd(objective, clean, cfg, *args, **kw):
            batches.append(clean.shape[0])
            if clean.shape[0] > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")
            return real_pgd(objective, clean, cfg, *args, **kw)
        return pgd

    args = ("attack.steps=3", "images=3", "heldout_prompts=1", "attack.images_per_batch=4")
    monkeypatch.setattr(attack_run, "pgd", pgd_with_room_for(1))
    metrics, record_path = run_attack_job(tmp_path / "fits", *args)
    record = json.loads(Path(record_path).read_text())
    assert batches == [3, 1, 1, 1] and metrics["images"] == 3
    assert record["execution"] == {"images_per_batch": 4, "final_images_per_batch": 1, "halvings": 1}
    monkeypatch.setattr(attack_run, "pgd", pgd_with_room_for(0))
    with pytest.raises(UserError, match=r"out of memory attacking one image .*lower attack.prompts_per_step \(now 8\) "
                                        r"or set placement.gradient_checkpointing=true"):
        run_attack_job(tmp_path / "never", *args)


# -- 4. records are untrusted data ---------------------------------------------------------

def valid_goat_record(n=10) -> dict:
    task = {"n": n, "accuracy": 80.0, "macro_f1": 79.0, "skipped": 0, "invalid_rate": 0.0}
    return {"schema_version": 1, "kind": "goat_bench", "status": "completed", "config": {}, "config_sha256": "x",
            "model": {"name": "good-model"}, "spec": {"workload": "goat_bench", "tasks": ["sarcasm"], "scoring": "logprob"},
            "metrics": {"per_task": {"sarcasm": task}, "overall": task}, "counts": {"ok": n, "skipped": 0, "errors": 0}}


def test_leaderboard_lists_bad_records_under_problems_and_writes_the_rest(tmp_path):
    from mmsafety.leaderboard import write_leaderboard

    runs = tmp_path / "runs"
    cases = {
        "bomb": BOMB,
        "wrong-types": json.dumps({"kind": 5, "status": [], "config": "x"}),
        "wrong-status": json.dumps({**valid_goat_record(), "status": "done"}),
        "metric-not-a-number": json.dumps({**valid_goat_record(), "metrics": {"per_task": {"sarcasm": {"n": "x"}}}}),
        "good": json.dumps(valid_goat_record()),
    }
    for name, text in cases.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "record.json").write_text(text)
    summary = write_leaderboard([runs], tmp_path / "board")
    problems = "\n".join(summary["problems"])
    assert summary["rows"]["goat_bench"] == 1 and len(summary["problems"]) == 4
    assert "bomb/record.json: skipped, unreadable (nested deeper than 64 levels)" in problems
    assert "kind is 5, not a string; status is [], not a string; config is 'x', not an object" in problems
    assert "status is 'done', not one of completed, partial, failed" in problems
    assert "metrics.per_task.sarcasm.n is 'x', not an integer" in problems
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "good-model" in page and "nested deeper than 64 levels" in page
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert [r["model"] for r in board["goat_bench"]] == ["good-model"]


def test_leaderboard_leaves_out_unusable_samples_and_says_so(tmp_path):
    from mmsafety.leaderboard import write_leaderboard

    folder = tmp_path / "runs" / "shard"
    folder.mkdir(parents=True)
    record = {**valid_goat_record(), "status": "partial", "metrics": {},
              "spec": {"tasks": ["sarcasm"], "sample_key": ["task", "id"], "rescore": "goat_bench.evaluate:rescore"}}
    (folder / "record.json").write_text(json.dumps(record))
    good = [{"task": "sarcasm", "id": str(i), "status": "ok", "label": i % 2, "pred": 1, "correct": i % 2 == 1} for i in range(4)]
    bad = [BOMB, json.dumps({"task": "sarcasm", "id": "x", "status": "ok", "label": [1], "pred": 1}),
           json.dumps({"task": ["sarcasm"], "id": "y", "status": "ok", "label": 1, "pred": 1}), "[1, 2]"]
    (folder / "samples.jsonl").write_text("\n".join([*map(json.dumps, good), *bad]) + "\n")
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "board")
    row = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["goat_bench"][0]
    assert row["memes"] == 4 and row["sarcasm_acc"] == 50.0
    assert summary["problems"] == [f"{folder / 'samples.jsonl'}: 4 line(s) left out (line 5: nested deeper than 64 levels)"]


def test_resume_sets_unusable_sample_lines_aside_and_redoes_them(tmp_path):
    from mmsafety.record_kinds import schema_of
    from mmsafety.records import RunRecord, config_sha256

    out = tmp_path / "run"
    out.mkdir()
    config = {"model": "m"}
    (out / "record.json").write_text(json.dumps({**valid_goat_record(), "status": "partial", "config": config,
                                                 "config_sha256": config_sha256(config)}))
    good = {"task": "sarcasm", "id": "1", "status": "ok", "label": 1, "pred": 1, "correct": True}
    lines = [json.dumps(good), BOMB, json.dumps({**good, "id": "2", "label": True}), json.dumps({**good, "id": ["3"]}),
             json.dumps({**good, "id": "4", "status": {"x": 1}}), "not json"]
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    record = RunRecord.open(out, "goat_bench", config, schema=schema_of("goat_bench"))
    try:
        assert record.samples == [good] and record.done_keys(("task", "id")) == {("sarcasm", "1")}
        assert record.data["resume_rejected"]["lines"] == 5
        assert record.data["resume_rejected"]["first_reasons"][0] == "line 2: nested deeper than 64 levels"
        record.write("partial")
    finally:
        record.close()
    assert read_samples(out / "samples.jsonl") == [good]
    assert (out / "samples.rejected.jsonl").read_text().count("\n") == 5  # kept, not deleted


def test_a_previous_record_that_is_a_bomb_counts_as_no_record(tmp_path):
    from mmsafety.records import RunRecord

    (tmp_path / "record.json").write_text(BOMB)
    record = RunRecord.open(tmp_path, "goat_bench", {"a": 1})
    record.close()
    assert json.loads((tmp_path / "record.json").read_text())["status"] == "partial"


# -- 5. attack configs that cannot work -----------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("heldout_prompts=0", "heldout_prompts=0: must be >= 1"),
    ("images=0", "images=0: must be >= 1"),
    ("images=-3", "images=-3: must be >= 1"),
    ("attack.images_per_batch=0", "attack.images_per_batch=0: must be >= 1"),
    ("attack.eps=8", "attack.eps=8: an L-inf budget above 1 puts no bound on pixels in [0,1]; budgets are in pixel units, e.g. attack.eps=8/255"),
    ("attack.eps=300/255", "attack.eps=300/255: an L-inf budget above 1"),
    ("attack.eps=nan", "attack.eps=nan: not a finite number"),
    ("attack.eps=null", "attack.eps=None: not a number"),
    ("attack.seed=-2", "attack.seed=-2: must be between 0 and 2**63-1"),
])
def test_attack_config_that_cannot_work_is_refused_before_a_model_loads(override, message):
    from mmsafety.app import compose_config
    from functools import partial

    from mmsafety.app import validate_job
    validate = partial(validate_job, "visual_attack")

    with pytest.raises(ConfigError) as err:
        compose_config("attack", [override], validate)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("task.limit=0", "task.limit=0: must be >= 1, or null"),
    ("task.synthetic_per_task=-5", "task.synthetic_per_task=-5: must be between 1 and 10000"),
    ("max_new_tokens=0", "max_new_tokens=0: must be >= 1"),
    ("seed=-1", "seed=-1: must be between 0 and 2**63-1"),
    ("model.seed=1000000000000000000000", "model.seed=1000000000000000000000: must be between 0 and 2**63-1"),
])
def test_eval_config_that_cannot_work_is_refused_before_a_model_loads(override, message):
    from functools import partial

    from mmsafety.app import validate_job
    validate = partial(validate_job, "goat_bench")
    from mmsafety.app import compose_config

    with pytest.raises(ConfigError) as err:
        compose_config("eval", [override], validate)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_linf_budget_of_one_and_unconstrained_attacks_stay_accepted():
    from mmsafety.app import compose_config
    from functools import partial

    from mmsafety.app import validate_job
    validate = partial(validate_job, "visual_attack")

    compose_config("attack", ["attack.eps=1"], validate)
    compose_config("attack", ["attack=pgd_unconstrained"], validate)  # eps 1, norm none
    compose_config("attack", ["attack.norm=l2", "attack.eps=8"], validate)  # L2: checked against the image size


def test_l2_budget_above_the_image_diagonal_is_refused():
    from visual_attacks.config_checks import check_l2_budget

    check_l2_budget("l2", 110.0, (3, 64, 64))  # diagonal 110.85
    check_l2_budget("linf", 500.0, (3, 64, 64))
    with pytest.raises(ConfigError, match=r"attack.eps=111: an L2 budget above the image's diagonal \(110.9 for 3x64x64"):
        check_l2_budget("l2", 111.0, (3, 64, 64))


def test_impossible_attack_config_is_one_line_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", "from visual_attacks.cli import main; main()", "heldout_prompts=0",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "error: heldout_prompts=0: must be >= 1 (the attack is judged on them, e.g. heldout_prompts=32)"]


@pytest.mark.slow
def test_many_images_are_attacked_in_chunks(tmp_path, monkeypatch, organism):
    import visual_attacks.craft as attack_run
    from visual_attacks.cli import run_attack_job

    real_pgd, batches = attack_run.pgd, []
    monkeypatch.setattr(attack_run, "pgd", lambda objective, clean, *a, **kw: batches.append(clean.shape[0]) or real_pgd(objective, clean, *a, **kw))
    metrics, record_path = run_attack_job(tmp_path / "run", "attack.steps=2", "images=5", "heldout_prompts=1",
                                          "attack.images_per_batch=2")
    assert batches == [2, 2, 1]  # never more than images_per_batch in one forward
    samples = read_samples(Path(record_path).parent / "samples.jsonl")
    assert sorted(s["image"] for s in samples) == [0, 1, 2, 3, 4] and metrics["images"] == 5
    curve = Path(record_path).parent / "loss_curve.csv"
    assert curve.read_text().splitlines()[0] == "step,image_0,image_1,image_2,image_3,image_4,mean"
    # Resume after losing image 3's sample: only its chunk (images 2 and 3) is attacked again, and
    # the loss curve still covers every image.
    samples_file = Path(record_path).parent / "samples.jsonl"
    before = {s["image"]: s for s in read_samples(samples_file)}
    samples_file.write_text("".join(json.dumps(s) + "\n" for i, s in sorted(before.items()) if i != 3))
    batches.clear()
    run_attack_job(tmp_path / "run", "attack.steps=2", "images=5", "heldout_prompts=1", "attack.images_per_batch=2")
    after = {s["image"]: s for s in read_samples(samples_file)}
    assert batches == [2] and sorted(after) == [0, 1, 2, 3, 4]
    assert after[3]["adversarial_png"] == before[3]["adversarial_png"]  # the same chunk gives the same image
    assert curve.read_text().splitlines()[0] == "step,image_0,image_1,image_2,image_3,image_4,mean"


# -- 6. the meme loader is strict where it was lenient ----------------------------------------

def test_meme_loader_refuses_non_scalar_ids_non_string_captions_and_boolean_labels(tmp_path):
    lines = [
        meme("ok"),
        meme("float-label", label=1.0),  # accepted: 1.0 is 1
        meme("string-label", label="0"),
        meme("bool-label", label=True),
        meme(["a", "list"]),
        meme({"an": "object"}),
        meme(True),
        meme("null-caption", text=None),
        meme("number-caption", text=42),
        meme("list-image", img=["img/a.png"]),
        json.dumps({"id": "org-null", "img": "img/a.png", "org_sent": None, "label": 0}).encode(),
        json.dumps({"id": 7, "img": "img/a.png", "org_sent": "official alias", "label": 0}).encode(),
    ]
    samples = load_task(write_task(tmp_path, "harmfulness", lines), "harmfulness")
    assert len(samples) == len(lines)
    reasons = {s.id: s.skip_reason for s in samples}
    assert reasons["ok"] is reasons["float-label"] is reasons["string-label"] is reasons["7"] is None
    assert next(s for s in samples if s.id == "7").text == "official alias"
    assert reasons["bool-label"] == "label True (a boolean) is not 0 or 1"
    assert reasons["line-5"] == "id ['a', 'list'] is not a string or an integer"
    assert reasons["line-6"] == "id {'an': 'object'} is not a string or an integer"
    assert reasons["line-7"] == "id True is not a string or an integer"
    assert reasons["line-8"] == "caption (text) None is not a string"
    assert reasons["line-9"] == "caption (text) 42 is not a string"
    assert reasons["line-10"] == "image path (img) ['img/a.png'] is not a string"
    assert reasons["line-11"] == "caption (org_sent) None is not a string"
    assert not any("None" in s.text for s in samples if s.skip_reason is None)


# -- 7. fuzzing: records, samples and numeric configs ------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 10 ** 20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
RECORD_KEYS = ["kind", "status", "config", "model", "spec", "metrics", "counts", "timing", "artifacts", "seeds", "error"]
SPEC_KEYS = ["shard", "sample_key", "rescore", "reference_rows", "group_by", "tasks", "synthetic", "root", "eps",
             "headline", "case", "scoring", "prompt", "steps"]


def _like(keys, values):
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


RECORDS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({
        "kind": st.sampled_from(["goat_bench", "visual_attack", "other"]) | JSON_VALUES,
        "status": st.sampled_from(["completed", "partial", "failed"]) | JSON_VALUES,
        "config": st.just({}) | JSON_VALUES,
        "spec": _like(SPEC_KEYS, JSON_VALUES | st.sampled_from(
            ["goat_bench.evaluate:rescore", "visual_attacks.run:rescore", "goat_bench.tasks:paper_rows", "os:system"])
            | st.just({"index": 0, "count": 2}) | st.just(["task", "id"]) | st.just(["sarcasm"])),
        "metrics": _like(["per_task", "overall", "asr", "images", "stealth", "clean_baseline"], JSON_VALUES),
    }, optional={k: JSON_VALUES for k in RECORD_KEYS if k not in ("kind", "status", "config", "spec", "metrics")}),
)
SAMPLE_KEYS = ["task", "id", "status", "label", "pred", "correct", "reason", "image", "clean_png", "adversarial_png",
               "steps_run", "attack_seconds", "stealth", "clean", "adversarial", "utility", "base"]
SAMPLES = st.one_of(
    JSON_VALUES,
    _like(SAMPLE_KEYS, JSON_VALUES | st.sampled_from(["ok", "skipped", "sarcasm", 0, 1, "../x.png"])),
)
SAMPLE_LINES = st.lists(st.one_of(SAMPLES.map(lambda s: json.dumps(s)), st.just(BOMB[:400] + BOMB[-400:]),
                                  st.text(max_size=20).map(lambda t: t.replace("\n", " "))), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=st.lists(RECORDS, min_size=1, max_size=3), lines=SAMPLE_LINES)
def test_fuzzed_records_and_samples_never_crash_the_leaderboard(tmp_path_factory, records, lines):
    from mmsafety.leaderboard.collect import build_rows
    from mmsafety.leaderboard.tables import section_tables

    runs = tmp_path_factory.mktemp("board")
    for i, record in enumerate(records):
        (runs / str(i)).mkdir()
        (runs / str(i) / "record.json").write_text(json.dumps(record))
        (runs / str(i) / "samples.jsonl").write_text("".join(line + "\n" for line in lines))
    rows, problems = build_rows([runs])
    assert len(rows) + sum("record.json: skipped" in p for p in problems) >= 1
    assert all("\n" not in p for p in problems)
    section_tables(rows)  # every workload's table reads every field the schema let through


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(record=st.one_of(RECORDS, st.builds(lambda r: {**r, "status": "completed"}, RECORDS.filter(lambda r: isinstance(r, dict)))),
       lines=SAMPLE_LINES)
def test_fuzzed_records_and_samples_never_crash_the_written_leaderboard(tmp_path_factory, record, lines):
    from mmsafety.leaderboard import write_leaderboard

    runs = tmp_path_factory.mktemp("page")
    (runs / "r").mkdir()
    (runs / "r" / "record.json").write_text(json.dumps(record))
    (runs / "r" / "samples.jsonl").write_text("".join(line + "\n" for line in lines))
    write_leaderboard([runs], runs / "board")
    assert (runs / "board" / "leaderboard.html").is_file()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["goat_bench", "visual_attack"]), lines=SAMPLE_LINES)
def test_fuzzed_samples_never_crash_a_resume(tmp_path_factory, kind, lines):
    from goat_bench.evaluate import score_samples
    from mmsafety.record_kinds import schema_of
    from mmsafety.records import RunRecord
    from visual_attacks.run import summarize

    out = tmp_path_factory.mktemp("resume")
    (out / "samples.jsonl").write_text("".join(line + "\n" for line in lines))
    record = RunRecord.open(out, kind, {"c": 1}, schema=schema_of(kind))
    try:
        record.done_keys(("task", "id") if kind == "goat_bench" else ("image",))
        record.write("partial")
        if kind == "goat_bench":
            score_samples(record.samples, ["sarcasm"])
        else:
            summarize(record.samples, ("colour",))
    finally:
        record.close()
    kept = read_samples(out / "samples.jsonl")
    rejected = out / "samples.rejected.jsonl"
    assert len(kept) + (rejected.read_bytes().count(b"\n") if rejected.exists() else 0) == len(lines)


NUMBERS = st.one_of(st.integers(-10 ** 30, 10 ** 30), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["8/255", "1/0", "-1/255", "nan", "inf", "1e400", "0x10", "300/255", "null"]))
EVAL_KEYS = ["batch_size", "image_workers", "shard", "num_shards", "max_new_tokens", "seed", "task.limit",
             "task.synthetic_per_task", "model.seed"]
ATTACK_KEYS = ["images", "heldout_prompts", "seed", "attack.eps", "attack.step_size", "attack.steps",
               "attack.prompts_per_step", "attack.images_per_batch", "attack.check_every", "attack.early_stop_loss",
               "attack.objective.response_weight", "attack.objective.l2_weight", "attack.seed", "model.seed"]


def _check_command_line(app: str, overrides: list[str]) -> None:
    from mmsafety.app import check_command_line

    try:
        check_command_line("goat_bench" if app == "eval" else "visual_attack", overrides, multirun=False)
    except UserError as e:
        assert str(e) and "\n" not in str(e), str(e)


@settings(max_examples=40, deadline=None)
@given(values=st.dictionaries(st.sampled_from(EVAL_KEYS), NUMBERS, min_size=1, max_size=3))
def test_fuzzed_numeric_eval_config_is_accepted_or_refused_in_one_line(values):
    _check_command_line("eval", [f"{k}={v}" for k, v in values.items()])


@settings(max_examples=40, deadline=None)
@given(values=st.dictionaries(st.sampled_from(ATTACK_KEYS), NUMBERS, min_size=1, max_size=3))
def test_fuzzed_numeric_attack_config_is_accepted_or_refused_in_one_line(values):
    _check_command_line("attack", [f"{k}={v}" for k, v in values.items()])


# -- issue 21, item 4: files respect the umask --------------------------------------------

def test_atomic_writes_respect_the_umask(tmp_path):
    from mmsafety.records import atomic_write_text, current_umask

    previous = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        atomic_write_text(tmp_path / "record.json", "{}")
        assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
