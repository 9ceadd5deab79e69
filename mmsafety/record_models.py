"""The typed, versioned run record: `record.json` and the core of every `samples.jsonl` line.

One pydantic model per concept. From it come the record a job starts with (`new_record`), the
check of every field a job sets (`RunRecord.update`), the validation of records and samples
read from disk (`mmsafety.record_schema`) and the published JSON Schema
(`schemas/record.schema.json`, `schemas/sample.schema.json`; regenerate them with
`python -m mmsafety.record_models`).

Every field but `kind` and `status` may be absent from a record read from disk (a job killed at
its start, an older record): a field is checked when present. Unknown fields are kept: a
workload adds its own (`served`, `execution`, ...), and the workload's own spec, metrics and
sample fields are checked by the models its caller passes in (`RecordSchema`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr, WrapValidator
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
STATUSES = ("completed", "partial", "failed")
SAMPLE_STATUSES = ("ok", "skipped", "error")


def answered(sample: dict) -> bool:
    """Whether a samples.jsonl line is an answer: status "ok", or no status at all (SampleModel's default, so the
    schema checks such a line as an answer, and every reader must count and score it as one)."""
    return sample.get("status", "ok") == "ok"


# A number is an int or a float, never a bool (a bool is an int to Python, never to a record); NaN
# and infinity are numbers here: our own records hold them (the PSNR of an unchanged image is inf).
Number = Annotated[float, Strict()]


def one_of(*values: str) -> Any:
    """A string field whose value must be one of `values` (one line when it is not)."""

    def check(value, handler):
        value = handler(value)
        if value not in values:
            raise PydanticCustomError("one_of", "not one of {values}", {"values": ", ".join(values)})
        return value

    return Annotated[StrictStr, WrapValidator(check), Field(json_schema_extra={"enum": list(values)})]


def any_of(*types: Any, label: str) -> Any:
    """A field of one of several types, refused in one line ("not a string or null") rather than
    in one line per type tried, as pydantic reports a union."""

    def check(value, handler):
        try:
            return handler(value)
        except ValueError:
            raise PydanticCustomError("any_of", "not {label}", {"label": label}) from None

    inner = types[0]
    for t in types[1:]:
        inner = inner | t
    return Annotated[inner, WrapValidator(check)]


class Open(BaseModel):
    """A JSON object of which the fields listed are checked when present; any other field is kept."""

    model_config = ConfigDict(extra="allow")


class Shard(Open):
    index: StrictInt = None
    count: StrictInt = None


class ModelInfo(Open):
    name: StrictStr = None
    weights_sha256: any_of(StrictStr, None, label="a string or null") = None


class Spec(Open):
    """What a record measured; its workload adds the fields that say so (`RecordSchema.spec`)."""

    shard: Shard = None
    sample_key: list[StrictStr] = None


class Counts(Open):
    ok: StrictInt = None
    skipped: StrictInt = None
    errors: StrictInt = None
    __pydantic_extra__: dict[str, StrictInt]


class Seeds(Open):
    seed: StrictInt = None


class Timing(Open):
    started: Number = None      # Unix time, seconds
    finished: Number = None     # Unix time of the last write, seconds
    seconds: Number = None      # wall time of this run so far, seconds
    resumes: StrictInt = None   # how many times the job was started again on this folder


class ResumeRejected(Open):
    lines: StrictInt = None
    first_reasons: list[StrictStr] = None


class RunRecordModel(Open):
    """`record.json`: one job's record, rewritten atomically while it runs."""

    schema_version: StrictInt = None
    run_id: StrictStr = None
    kind: StrictStr = Field(description="the registered workload that wrote it")
    status: one_of(*STATUSES) = Field(description="partial while running or when interrupted")
    config: dict[str, Any] = None
    config_sha256: StrictStr = None
    model: ModelInfo = None
    spec: Spec = None
    metrics: dict[str, Any] = Field(None, description=(
        "the workload's measures, unrounded (docs/leaderboard.md, Numbers): rates of an attack record (asr, "
        "clean_baseline, utility, asr_by) and HarmBench's asr and ci95 are fractions 0-1; GOAT-Bench's "
        "accuracy, macro_f1, invalid_rate and their ci95 are percent 0-100, as the paper's Table 2"))
    counts: Counts = None
    skipped_reasons: dict[str, StrictInt] = None
    seeds: Seeds = None
    versions: dict[str, any_of(StrictStr, None, label="a string or null")] = None
    timing: Timing = None
    command: StrictStr = None
    error: StrictStr = None
    artifacts: dict[str, Any] = None
    resume_rejected: ResumeRejected = None


class SampleModel(Open):
    """One line of `samples.jsonl`; its workload's model (`RecordSchema.samples`) adds the fields of
    each status. Fields ending in `_png` name files inside the run folder."""

    status: one_of(*SAMPLE_STATUSES) = "ok"


def new_record(*, run_id: str, kind: str, config: dict, config_sha256: str, seeds: dict, versions: dict,
               started: float, resumes: int, command: str) -> dict:
    """The record a job writes first (status partial), in the order of its fields on disk."""
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "kind": kind, "status": "partial", "config": config,
        "config_sha256": config_sha256, "model": {}, "spec": {}, "metrics": {},
        "counts": {"ok": 0, "skipped": 0, "errors": 0}, "skipped_reasons": {}, "seeds": seeds,
        "versions": versions, "timing": {"started": started, "resumes": resumes}, "command": command,
    }


class _NoNullDefaults(GenerateJsonSchema):
    """`= None` above means "may be absent", not "may be null": leave such defaults out of the schema."""

    def default_schema(self, schema):
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def json_schemas() -> dict[str, dict]:
    """The published JSON Schemas, by file name."""
    out = {}
    for name, model, title in (("record.schema.json", RunRecordModel, "mmsafety run record (record.json)"),
                               ("sample.schema.json", SampleModel, "mmsafety sample (one line of samples.jsonl)")):
        schema = model.model_json_schema(schema_generator=_NoNullDefaults)
        out[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": title,
                     "x-mmsafety-schema-version": SCHEMA_VERSION}
    return out


def schema_text(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        (folder / name).write_text(schema_text(schema), encoding="utf-8")
        written.append(folder / name)
    return written


if __name__ == "__main__":  # python -m mmsafety.record_models [FOLDER]: regenerate the published schemas
    for path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)
