"""The typed record: the published JSON Schema is the one the models generate, a real run's record
validates against it, and a record or sample read from disk is refused field by field, one line each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsafety.record_models import RunRecordModel, SampleModel, json_schemas, schema_text
from mmsafety.record_schema import (NUMBER, OPTIONAL_NUMBER, ListOf, MapOf, RecordSchema, Required, record_problems,
                                    sample_problems, split_samples)

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

try:
    import jsonschema
except ImportError:  # the published schema is then checked through the models it comes from
    jsonschema = None


def schema_errors(document: dict, name: str) -> list[str]:
    """Why `document` does not validate against the committed schema `name` (jsonschema when
    installed, else the pydantic model the schema is generated from)."""
    if jsonschema is not None:
        schema = json.loads((SCHEMAS / name).read_text())
        return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
    model = {"record.schema.json": RunRecordModel, "sample.schema.json": SampleModel}[name]
    return record_problems(document) if model is RunRecordModel else sample_problems(document)


def test_the_committed_schemas_are_the_generated_ones():
    generated = json_schemas()
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(generated)
    for name, schema in generated.items():
        assert (SCHEMAS / name).read_text() == schema_text(schema), \
            f"schemas/{name} is stale: run python -m mmsafety.record_models schemas"


@pytest.mark.slow
def test_a_real_record_validates_against_the_published_schema(organism, tmp_path):
    from goat_bench.cli import run_eval
    from mmsafety.record_kinds import schema_of
    from mmsafety.records import read_samples

    _, record_path = run_eval(tmp_path / "run", "task=goat_sarcasm", "model=organism", "task.limit=4")
    record = json.loads(Path(record_path).read_text())
    assert record["status"] == "completed" and record["counts"]["ok"] == 4
    assert schema_errors(record, "record.schema.json") == []
    assert record_problems(record, schema_of) == []  # and its workload's own fields
    samples = read_samples(Path(record_path).parent / "samples.jsonl")
    assert len(samples) == 4 and all(schema_errors(s, "sample.schema.json") == [] for s in samples)
    assert split_samples(samples, schema_of("goat_bench")) == (samples, [])
    # The same record with one field of the wrong type is refused by the schema too.
    assert schema_errors({**record, "counts": {**record["counts"], "ok": "4"}}, "record.schema.json")


GOOD = {"kind": "k", "status": "completed", "model": {"name": "m", "weights_sha256": None},
        "spec": {"shard": {"index": 0, "count": 2}, "sample_key": ["id"]}, "counts": {"ok": 3},
        "timing": {"seconds": 1}, "seeds": {"seed": 0}, "metrics": {"psnr": math.inf}}


@pytest.mark.parametrize("change, line", [
    ({"kind": None}, "kind is None, not a string"),
    ({"status": "done"}, "status is 'done', not one of completed, partial, failed"),
    ({"model": {"weights_sha256": 5}}, "model.weights_sha256 is 5, not a string or null"),
    ({"spec": {"shard": {"index": True}}}, "spec.shard.index is True, not an integer"),
    ({"spec": {"sample_key": ["id", 3]}}, "spec.sample_key[1] is 3, not a string"),
    ({"counts": {"ok": 1, "mystery": 2.5}}, "counts.mystery is 2.5, not an integer"),
    ({"timing": {"seconds": "1s"}}, "timing.seconds is '1s', not a number"),
    ({"config": "x" * 40}, "config is a string (42 characters), not an object"),
    ({"counts": {"\n": None}}, "counts['\\n'] is None, not an integer"),  # a hostile key stays on one line
    ({"counts": {"": "x"}}, "counts[''] is 'x', not an integer"),
])
def test_a_wrong_field_is_one_line_naming_it(change, line):
    assert record_problems(GOOD) == []
    assert record_problems({**GOOD, **change}) == [line]


def test_a_missing_kind_or_status_is_named():
    assert record_problems({"status": "partial"}) == ["kind is missing"]
    assert record_problems([1]) == ["the document is [1], not an object"]


def test_the_kind_schema_comes_from_the_caller_and_checks_spec_metrics_and_samples():
    spec = {"eps": OPTIONAL_NUMBER, "tasks": ListOf(str), "prompt": {"name": str}}
    metrics = {"per_task": MapOf({"n": int, "accuracy": NUMBER})}
    samples = {"ok": {"id": Required(str), "label": Required(int), "pred": (int, type(None)), "keep": bool},
               "skipped": {"id": Required(str), "reason": Required(str)}}
    schema = RecordSchema.from_shapes("toy", spec, metrics, samples,
                                      lambda s: [] if s.get("label", 0) in (0, 1) else [f"label is {s['label']}, not 0 or 1"])
    asked = []

    def schema_of(kind):
        asked.append(kind)
        return schema if kind == "toy" else None

    record = {**GOOD, "kind": "toy", "spec": {"eps": None, "tasks": ["a"], "prompt": {"name": "p"}},
              "metrics": {"per_task": {"a": {"n": 2, "accuracy": 50}}}}
    assert record_problems(record, schema_of) == [] and asked == ["toy"]
    bad = {**record, "spec": {"eps": "8/255", "tasks": "a", "prompt": {"name": 1}},
           "metrics": {"per_task": {"a": {"n": 2.0, "accuracy": False}}}}
    assert record_problems(bad, schema_of) == [
        "spec.eps is '8/255', not a number or null", "spec.tasks is 'a', not a list", "spec.prompt.name is 1, not a string",
        "metrics.per_task.a.n is 2.0, not an integer", "metrics.per_task.a.accuracy is False, not a number"]
    assert record_problems({**bad, "kind": "other"}, schema_of) == []  # a kind the caller does not know: core only

    ok = {"id": "1", "label": 1, "pred": None}
    assert sample_problems(ok, schema) == []
    assert sample_problems({**ok, "pred": "yes"}, schema) == ["pred is 'yes', not an integer or null"]
    assert sample_problems({"id": "1", "pred": 1}, schema) == ["label is missing"]
    assert sample_problems({**ok, "label": 2}, schema) == ["label is 2, not 0 or 1"]  # a value a type cannot refuse
    assert sample_problems({"status": "skipped", "id": "1"}, schema) == ["reason is missing"]
    assert sample_problems({**ok, "status": "maybe"}, schema) == ["status is 'maybe', not one of ok, skipped, error"]
    assert sample_problems({**ok, "clean_png": "../../etc/x.png"}, schema) == ["clean_png '../../etc/x.png' leaves the run folder"]
    assert sample_problems({**ok, "label": True}, None) == []  # no kind schema: only the core fields are checked
    good, bad_lines = split_samples([ok, 5, {**ok, "label": True}], schema)
    assert good == [ok] and bad_lines == ["sample 2: sample is 5, not an object", "sample 3: label is True, not an integer"]


def test_a_workload_may_give_pydantic_models_instead_of_shapes():
    from pydantic import BaseModel, StrictInt

    class CoinSample(BaseModel):
        heads: StrictInt

    schema = RecordSchema.from_shapes("coins", samples={"ok": CoinSample})
    assert schema.samples["ok"] is CoinSample
    assert sample_problems({"heads": "1"}, schema) == ["heads is '1', not an integer"]


# -- the published schema and the models agree ----------------------------------------------

JSON_LEAVES = (st.none() | st.booleans() | st.integers(-3, 10 ** 6) | st.text(max_size=4)
               | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not float(x).is_integer()))
FIELD_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=2)
                            | st.dictionaries(st.sampled_from(["name", "index", "count", "seed", "ok", "seconds",
                                                               "sample_key", "shard", "x"]), inner, max_size=3),
                            max_leaves=6)
RECORDS = st.fixed_dictionaries(
    {"kind": st.just("k") | JSON_LEAVES, "status": st.sampled_from(["completed", "partial", "done"])},
    optional={k: FIELD_VALUES for k in ("schema_version", "model", "spec", "counts", "seeds", "timing", "config",
                                        "versions", "error", "resume_rejected", "skipped_reasons")})


@pytest.mark.skipif(jsonschema is None, reason="jsonschema is not installed (pip install -e .[test])")
@settings(max_examples=300, deadline=None)
@given(record=RECORDS)
def test_the_published_schema_accepts_exactly_what_the_models_accept(record):
    """jsonschema on the committed file and pydantic on the models say the same (integral floats
    left out: JSON Schema counts 1.0 as an integer, a record never does)."""
    assert (schema_errors(record, "record.schema.json") == []) == (record_problems(record) == [])


def test_reading_records_imports_neither_torch_nor_transformers(tmp_path):
    """The storage layer a leaderboard reads through (decoding, the models, the checks) loads no
    deep-learning library: reading a folder of records must not cost seconds of imports."""
    import subprocess
    import sys

    (tmp_path / "samples.jsonl").write_text('{"id": "1", "status": "ok"}\n')
    (tmp_path / "record.json").write_text(json.dumps(GOOD))
    code = f"""
import sys
from pathlib import Path
from mmsafety.records import read_samples
from mmsafety.record_schema import record_problems, split_samples
from mmsafety.safe_json import loads_object
folder = Path({str(tmp_path)!r})
assert record_problems(loads_object((folder / "record.json").read_bytes())) == []
assert split_samples(read_samples(folder / "samples.jsonl"))[1] == []
heavy = [name for name in ("torch", "transformers") if name in sys.modules]
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
