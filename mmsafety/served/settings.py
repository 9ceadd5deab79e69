"""The served-model keys of `model:` resolved into the settings a client runs with, and their range
checks; the keys and their defaults are declared once, in mmsafety.config.ServedModelConfig. The key
itself is never a setting: only the name of the environment variable that holds it."""

from __future__ import annotations

import os
from dataclasses import MISSING as MISSING_FIELD, dataclass, fields
from pathlib import Path
from typing import Any

from mmsafety.config import ServedModelConfig
from mmsafety.errors import ConfigError
from mmsafety.paths import cache_dir

IMAGE_FORMATS = ("png", "jpeg")


@dataclass(frozen=True)
class ServedSettings:
    """What a served model's client runs with: a `model:` node's served keys, resolved (the defaults
    live once, in mmsafety.config.ServedModelConfig)."""

    model: str                       # the served model name (model.name_or_path)
    base_url: str                    # ends with /v1 for every OpenAI-compatible server
    api_key_env: str
    max_connections: int
    timeout_s: float
    max_retries: int
    image_format: str
    jpeg_quality: int
    temperature: float
    max_tokens: int | None           # None: what the workload asks for
    top_logprobs: int
    cache_path: Path | None          # None: no response cache
    price_per_million_tokens: dict[str, float]
    max_requests: int | None
    max_cost: float | None
    backoff_s: float
    max_backoff_s: float

    def api_key(self) -> str:
        """The key, from the environment only. Local servers take any key, so an unset variable is
        sent as a placeholder; a server that checks keys then answers 401, reported in one line."""
        return os.environ.get(self.api_key_env) or "not-set"

    def key_is_set(self) -> bool:
        return bool(os.environ.get(self.api_key_env))

    def describe(self) -> dict[str, Any]:
        """What goes into a record: never the key, only the variable's name."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                "max_connections": self.max_connections, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
                "image_format": self.image_format, "jpeg_quality": self.jpeg_quality if self.image_format == "jpeg" else None,
                "temperature": self.temperature, "cache": str(self.cache_path) if self.cache_path else None,
                "max_requests": self.max_requests, "max_cost": self.max_cost}


def served_defaults() -> dict[str, Any]:
    """Each served key's default, read from its schema (mmsafety.config.ServedModelConfig)."""
    defaults = {}
    for f in fields(ServedModelConfig):
        defaults[f.name] = f.default_factory() if f.default_factory is not MISSING_FIELD else f.default
    return defaults


def settings_from_config(cfg) -> ServedSettings:
    """ServedSettings from a `model:` config node (or any mapping with the same keys; a key that is
    absent or null takes its schema default)."""
    def value(key: str):
        given = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
        return defaults[key] if given is None else given

    defaults = served_defaults()
    model, base_url = value("name_or_path"), value("base_url")
    if not model:
        raise ConfigError("model.name_or_path is empty: set it to the served model's name (e.g. gpt-4o)")
    if not base_url:
        raise ConfigError("model.base_url is not set: give the server's OpenAI-compatible URL, "
                          "e.g. model.base_url=http://127.0.0.1:8000/v1")
    if not str(base_url).startswith(("http://", "https://")):
        raise ConfigError(f"model.base_url={base_url}: not an http(s) URL; e.g. http://127.0.0.1:8000/v1")
    cache_path = value("cache_path")
    s = ServedSettings(
        model=str(model), base_url=str(base_url).rstrip("/"), api_key_env=str(value("api_key_env")),
        max_connections=int(value("max_connections")), timeout_s=float(value("timeout_s")),
        max_retries=int(value("max_retries")), image_format=str(value("image_format")).lower(),
        jpeg_quality=int(value("jpeg_quality")), temperature=float(value("temperature")),
        max_tokens=value("max_tokens"), top_logprobs=int(value("top_logprobs")),
        cache_path=(Path(cache_path).expanduser() if cache_path else cache_dir() / "served" / "responses.sqlite")
        if value("cache") else None,
        price_per_million_tokens={str(k): float(v) for k, v in dict(value("price_per_million_tokens")).items()},
        max_requests=value("max_requests"), max_cost=value("max_cost"),
        backoff_s=float(value("backoff_s")), max_backoff_s=float(value("max_backoff_s")),
    )
    check_settings(s)
    return s


def check_settings(s: ServedSettings) -> None:
    if s.max_connections < 1:
        raise ConfigError(f"model.max_connections={s.max_connections}: must be >= 1")
    if s.timeout_s <= 0:
        raise ConfigError(f"model.timeout_s={s.timeout_s}: must be > 0 seconds")
    if s.max_retries < 0:
        raise ConfigError(f"model.max_retries={s.max_retries}: must be >= 0")
    if s.backoff_s < 0:
        raise ConfigError(f"model.backoff_s={s.backoff_s}: must be >= 0 seconds")
    if s.max_backoff_s < s.backoff_s:
        raise ConfigError(f"model.max_backoff_s={s.max_backoff_s}: must be >= model.backoff_s={s.backoff_s}")
    if s.image_format not in IMAGE_FORMATS:
        raise ConfigError(f"model.image_format={s.image_format}: use png (lossless) or jpeg")
    if not 1 <= s.jpeg_quality <= 95:
        raise ConfigError(f"model.jpeg_quality={s.jpeg_quality}: use 1-95")
    if not 0 <= s.top_logprobs <= 20:
        raise ConfigError(f"model.top_logprobs={s.top_logprobs}: the protocol allows 0-20")
    unknown = set(s.price_per_million_tokens) - {"prompt", "completion"}
    if unknown:
        raise ConfigError(f"model.price_per_million_tokens has {sorted(unknown)}: use the keys prompt and completion")
    if s.max_cost is not None and not s.price_per_million_tokens:
        raise ConfigError("model.max_cost is set without model.price_per_million_tokens: give the prices "
                          "({prompt: .., completion: ..} per million tokens) so cost can be counted")
    if s.max_requests is not None and s.max_requests < 1:
        raise ConfigError(f"model.max_requests={s.max_requests}: must be >= 1 (null: no limit)")
