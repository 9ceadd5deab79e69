"""The record schema of each installed workload, by the kind its records carry.

Storage checks only the fields every record has; the fields a workload adds (its spec, metrics
and samples) come in as a `RecordSchema` that the caller looks up here and passes on, so storage
never looks up the workload registry itself.
"""

from __future__ import annotations

from functools import lru_cache

from mmsafety.record_schema import RecordSchema
from mmsafety.workload import WORKLOADS, Workload


@lru_cache(maxsize=64)
def schema_of_workload(kind: str, workload: Workload) -> RecordSchema:
    """The fields a workload's records add, from what it declares (`spec_shape`, `metrics_shape`,
    `sample_shapes`, shapes or pydantic models, and `sample_value_problems`); built once per workload,
    as a leaderboard asks for it once per file."""
    return RecordSchema.from_shapes(kind, workload.spec_shape, workload.metrics_shape, workload.sample_shapes,
                                    workload.sample_value_problems)


def schema_of(kind: object) -> RecordSchema | None:
    """The schema of the records of `kind`; None when no installed workload writes that kind (a record
    is data and may be someone else's: its kind selects a registered workload, never anything else)."""
    if not isinstance(kind, str) or kind not in WORKLOADS:
        return None
    return schema_of_workload(kind, WORKLOADS.get(kind))
