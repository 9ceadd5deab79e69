"""Job configs recorded in an earlier layout, read in today's: so that a run folder written before a
change of the config schema resumes under the same command, and the leaderboard puts it beside
today's runs of the same job.

Layout 1 (until December 2026): `attack.objective` was a name, and the keys of particular objectives
sat flat in `attack` (response_weight, l2_weight, clean_answer_tokens, target_corpus,
target_crop_scale); every `model:` node carried the served-model keys, null meaning "the default"
(a local model ignored them).
Layout 2 (today): `attack.objective` is a node, `{name, that objective's own keys}`
(conf/attack/objective/); only a served model's node (adapter openai_compatible) has the served
keys, each holding its value (the defaults of mmsafety.config.ServedModelConfig).

Pure functions on plain dicts: storage reads records with them, and imports nothing above it.
"""

from __future__ import annotations

import copy
from typing import Any

SERVED_ADAPTER = "openai_compatible"
# What a served key meant when layout 1 left it null (ServedSettings' defaults then; frozen here, so
# that an old record keeps meaning what it ran with even if a default changes later).
LAYOUT_1_SERVED_DEFAULTS: dict[str, Any] = {
    "base_url": None, "api_key_env": "OPENAI_API_KEY", "max_connections": 16, "timeout_s": 60.0, "max_retries": 5,
    "backoff_s": 0.5, "max_backoff_s": 30.0, "image_format": "png", "jpeg_quality": 90, "temperature": 0.0,
    "max_tokens": None, "top_logprobs": 20, "cache": True, "cache_path": None, "price_per_million_tokens": {},
    "max_requests": None, "max_cost": None,
}
# Layout 1's flat attack keys: the objective that reads each, and its name inside that objective's node.
LAYOUT_1_OBJECTIVE_KEYS: dict[str, tuple[str, str]] = {
    "response_weight": ("tool_misuse", "response_weight"), "l2_weight": ("tool_misuse", "l2_weight"),
    "clean_answer_tokens": ("tool_misuse", "clean_answer_tokens"), "target_corpus": ("target_corpus", "corpus"),
    "target_crop_scale": ("clip_image_embed", "target_crop_scale"),
}
# Layout 2's keys of each objective and their defaults (conf/attack/objective/, visual_attacks.config),
# filled in where a layout-1 config did not carry them.
LAYOUT_2_OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tool_misuse": {"response_weight": 0.1, "l2_weight": 0.0, "clean_answer_tokens": 128},
    "target_corpus": {"corpus": None},
    "clip_image_embed": {"target_crop_scale": None},
}


def upgrade_config(config: dict) -> dict:
    """`config` (a job's resolved config, as a record stores it) in today's layout: a new dict; a
    config already in it comes back equal."""
    config = copy.deepcopy(config)
    if isinstance(config.get("model"), dict):
        config["model"] = _upgrade_model(config["model"])
    if isinstance(config.get("attack"), dict):
        config["attack"] = _upgrade_attack(config["attack"])
    return config


def _upgrade_model(model: dict) -> dict:
    if model.get("adapter") == SERVED_ADAPTER:
        return {**model, **{k: v for k, v in LAYOUT_1_SERVED_DEFAULTS.items() if model.get(k) is None}}
    if not isinstance(model.get("adapter"), str):
        return model  # not a model node this code wrote: left as it is
    # A local model's served keys were null unless typed (and then ignored; today they are refused).
    return {k: v for k, v in model.items() if not (k in LAYOUT_1_SERVED_DEFAULTS and v is None)}


def _upgrade_attack(attack: dict) -> dict:
    if not isinstance(attack.get("objective"), str):
        return attack
    name = attack["objective"]
    node = {"name": name, **LAYOUT_2_OBJECTIVE_DEFAULTS.get(name, {})}
    for key, (owner, inside) in LAYOUT_1_OBJECTIVE_KEYS.items():
        if key in attack and owner == name:
            node[inside] = attack[key]
    upgraded = {k: v for k, v in attack.items() if k not in LAYOUT_1_OBJECTIVE_KEYS}
    upgraded["objective"] = node
    return upgraded
