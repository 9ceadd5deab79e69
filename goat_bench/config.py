"""The GOAT-Bench workload's config schemas (registered in Hydra's ConfigStore by the workload)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING

from mmsafety.config import ModelConfig, PlacementConfig


class Scoring(Enum):
    logprob = "logprob"    # Yes vs No scored without generating (choice_logprobs)
    generate = "generate"  # the paper's protocol: greedy text, then the answer parser


@dataclass
class TaskConfig:
    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # GOAT-Bench task names
    root: Optional[str] = None      # dataset root; null: the synthetic sample built offline
    # where images the task folder does not hold are looked up: Facebook's Hateful Memes folder
    # (the one that holds img/) for hatefulness, which the GOAT-Bench release ships as text only
    image_root: Optional[str] = None
    synthetic_per_task: int = 100   # size of that sample
    limit: Optional[int] = None     # at most this many memes per task (quick looks)
    # prompt template: paper (each task's own question) | official_script (the released script's
    # "is this meme harmful?" for every task) | cot
    prompt: str = "paper"


@dataclass
class EvalConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    placement: PlacementConfig = MISSING
    scoring: Scoring = Scoring.logprob
    batch_size: int = 16
    max_new_tokens: Optional[int] = None  # null: the template's (16 for the paper's prompt)
    image_workers: Optional[int] = None   # threads decoding images ahead; null: 4 on a GPU, 0 on the CPU
    shard: int = 0         # this job's share of the memes: shard i of num_shards, split by a hash of (task, id)
    num_shards: int = 1
    seed: int = 0


def register_schemas(cs) -> None:
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
