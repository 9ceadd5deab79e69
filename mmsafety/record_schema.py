"""Validation of records and samples read from disk, one line per field that is wrong.

A record or a samples.jsonl may come from someone else (a shared results folder, a copied
sweep), so the leaderboard and a resumed job treat them as untrusted data: `record_problems`
and `sample_problems` return one line per field that is missing or has the wrong type ("spec.eps
is 'x', not a number"), and the caller lists the file as a problem (leaderboard) or sets the
sample aside (resume). An empty list means every field the readers use has the type they expect.

The core's fields are checked by the models of `mmsafety.record_models`; a workload's own spec,
metrics and sample fields by the `RecordSchema` its caller passes in (storage never looks up the
workload registry). A workload may give those as pydantic models, or as the short shape notation
below, translated into pydantic models once:

    a Python type (str, int, float, bool, dict, list, object) or a tuple of them (a union);
    NUMBER (an int or a float, never a bool); OPTIONAL_NUMBER (the same, or null);
    {key: shape}: an object whose listed keys are checked when present (Required(shape): must be there);
    ListOf(shape), MapOf(shape): a list, an object with any keys, of values of that shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, ValidationError, create_model

from mmsafety.record_models import (SAMPLE_STATUSES, STATUSES, Number, Open, RunRecordModel, SampleModel,
                                    any_of)

__all__ = ["NUMBER", "OPTIONAL_NUMBER", "ListOf", "MapOf", "Required", "RecordSchema", "STATUSES",
           "SAMPLE_STATUSES", "record_problems", "field_problems", "sample_problems", "split_samples", "problems"]

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Required:
    shape: Any


# -- the shape notation, as pydantic types ------------------------------------------------

_LEAVES = {str: (StrictStr, "a string"), int: (StrictInt, "an integer"), float: (Number, "a number"),
           bool: (StrictBool, "true/false"), dict: (dict[str, Any], "an object"), list: (list[Any], "a list"),
           type(None): (None, "null"), object: (Any, "any")}


def _label(shape) -> str:
    if shape in (NUMBER, OPTIONAL_NUMBER):
        return "a number" if shape == NUMBER else "a number or null"
    if isinstance(shape, tuple):
        return " or ".join(_label(s) for s in shape)
    if isinstance(shape, (dict, MapOf)):
        return "an object"
    if isinstance(shape, ListOf):
        return "a list"
    return _LEAVES[shape][1]


def _type(shape, name: str) -> Any:
    """The pydantic type of a shape (`name` names the model of a nested object)."""
    if isinstance(shape, Required):
        shape = shape.shape
    if shape == NUMBER:
        return Number
    if shape == OPTIONAL_NUMBER:
        return any_of(Number, None, label=_label(shape))
    if isinstance(shape, tuple):
        return any_of(*(_type(s, name) for s in shape), label=_label(shape))
    if isinstance(shape, ListOf):
        return list[_type(shape.item, name)]
    if isinstance(shape, MapOf):
        return dict[str, _type(shape.value, name)]
    if isinstance(shape, dict):
        return model_of_shape(shape, name)
    return _LEAVES[shape][0]


def model_of_shape(shape: dict | type[BaseModel], name: str = "Shape") -> type[BaseModel]:
    """A pydantic model of an object shape: its listed keys checked when present, the Required ones
    refused when missing, any other key kept (a model passed in is returned as it is)."""
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        return shape
    fields = {}
    for i, (key, sub) in enumerate(shape.items()):
        # Keys become aliases: a key may not be a Python name, or may shadow a BaseModel attribute.
        default = ... if isinstance(sub, Required) else None
        fields[f"field_{i}"] = (_type(sub, f"{name}_{key}"), Field(default, alias=key))
    return create_model(name, __base__=Open, **fields)


# -- one line per problem -----------------------------------------------------------------

_TYPE_NAMES = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true/false",
               "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
               "list_type": "a list", "none_required": "null"}


def _describe(value) -> str:
    text = repr(value)
    if len(text) <= 30:
        return text
    kind = {str: "a string", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)
    return f"{kind} ({len(text)} characters)"


def _where(loc: tuple, prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (isinstance(part, str) and part.isprintable() and part.strip() == part and part):
            out += f"[{part!r}]"  # a key from a hostile file ('\n', ''): quoted, so the problem stays one line
        else:
            out += f".{part}" if out else part
    return out


def _line(error: dict, prefix: str) -> str:
    where = _where(error["loc"], prefix) or "the document"
    if error["type"] == "missing":
        return f"{where} is missing"
    expected = _TYPE_NAMES.get(error["type"])
    if expected is None:  # our own errors (one_of, any_of) say what they expected; pydantic's others, its words
        expected = error["msg"][4:] if error["msg"].startswith("not ") else error["msg"].lower()
    return f"{where} is {_describe(error['input'])}, not {expected}"


def problems(model: type[BaseModel], value: Any, where: str = "") -> list[str]:
    """One line per field of `value` that does not fit `model` ("spec.eps is 'x', not a number")."""
    if not isinstance(value, dict):
        return [f"{where or 'the document'} is {_describe(value)}, not an object"]
    try:
        model.model_validate(value)
    except ValidationError as e:
        return [_line(error, where) for error in e.errors(include_url=False)]
    return []


# -- what a kind of record adds ------------------------------------------------------------

@dataclass(frozen=True)
class RecordSchema:
    """The fields one kind of record (a workload's) adds to the core: the models of its spec, its
    metrics and its samples by status (ok, skipped, error), and the checks of a well-typed sample's
    values that a type cannot express (one line each). The caller looks it up and passes it in."""

    spec: type[BaseModel] = Open
    metrics: type[BaseModel] = Open
    samples: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    value_problems: Callable[[dict], list[str]] = lambda sample: []

    @classmethod
    def from_shapes(cls, name: str, spec: dict | type[BaseModel] = {}, metrics: dict | type[BaseModel] = {},
                    samples: Mapping[str, dict | type[BaseModel]] = {},
                    value_problems: Callable[[dict], list[str]] | None = None) -> "RecordSchema":
        """From shapes (or models): `samples` by sample status."""
        return cls(_model(spec, f"{name}_spec"), _model(metrics, f"{name}_metrics"),
                   {status: _model(shape, f"{name}_{status}_sample") for status, shape in samples.items()},
                   value_problems or (lambda sample: []))


def _model(shape, name: str) -> type[BaseModel]:
    return shape if isinstance(shape, type) else model_of_shape(shape, name)


# -- records and samples ------------------------------------------------------------------

def record_problems(record: Any, schema_of: Callable[[str], RecordSchema | None] | None = None) -> list[str]:
    """One line per field of a record.json its readers cannot use; [] when they can use all.
    `schema_of(kind)` gives the schema of the record's kind (None: a kind whose fields are unknown)."""
    found = problems(RunRecordModel, record)
    if found or schema_of is None:
        return found
    schema = schema_of(record["kind"])
    if schema is not None:
        if isinstance(record.get("spec"), dict):
            found += problems(schema.spec, record["spec"], "spec")
        if isinstance(record.get("metrics"), dict):
            found += problems(schema.metrics, record["metrics"], "metrics")
    return found


def field_problems(fields: dict) -> list[str]:
    """One line per field a job sets on its record (`RunRecord.update`) whose value, as written to
    record.json, does not fit the record model; fields the model does not name are the job's own."""
    typed = {key: value for key, value in fields.items() if key in RunRecordModel.model_fields}
    if not typed:
        return []
    on_disk = json.loads(json.dumps(typed, ensure_ascii=False, default=str))  # what a reader will see
    return problems(RunRecordModel, {"kind": "", "status": "partial", **on_disk})


def sample_problems(sample: Any, schema: RecordSchema | None = None) -> list[str]:
    """One line per field of a sample (a samples.jsonl line) that its kind's scoring cannot use."""
    if not isinstance(sample, dict):
        return [f"sample is {_describe(sample)}, not an object"]
    found = problems(SampleModel, sample)
    if found or schema is None:
        return found + _outside_the_run_folder(sample)
    found = problems(schema.samples.get(sample.get("status", "ok"), Open), sample)
    if not found:
        found = schema.value_problems(sample)
    return found + _outside_the_run_folder(sample)


def _outside_the_run_folder(sample: dict) -> list[str]:
    """Files the leaderboard opens (fields ending in _png) must stay in the run folder."""
    return [f"{key} {_describe(value)} leaves the run folder" for key, value in sample.items()
            if key.endswith("_png") and isinstance(value, str)
            and (value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"))]


def split_samples(samples: list, schema: RecordSchema | None = None) -> tuple[list[dict], list[str]]:
    """(the samples a kind's scoring can use, one line per sample set aside)."""
    good, bad = [], []
    for i, sample in enumerate(samples, 1):
        found = sample_problems(sample, schema)
        if found:
            bad.append(f"sample {i}: {'; '.join(found[:3])}")
        else:
            good.append(sample)
    return good, bad
