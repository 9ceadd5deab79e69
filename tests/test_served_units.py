"""Served-model parts that need no server: choice scoring from top_logprobs, Retry-After, the cache
key, settings, accounting and budgets, and the craft stage's refusal of a served model."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from mmsafety.errors import ConfigError
from mmsafety.models import capabilities
from mmsafety.models.openai_compatible import OpenAICompatibleAdapter
from mmsafety.served.accounting import Accounting
from mmsafety.served.cache import ResponseCache, request_key
from mmsafety.served.client import normalise_response, retry_after_seconds
from mmsafety.served.encoding import decode_data_url, data_url, encode_image, pixel_fingerprint
from mmsafety.served.errors import BudgetExhausted
from mmsafety.served.logprobs import choice_logprobs_from_tokens
from mmsafety.served.settings import settings_from_config


def test_choice_logprobs_pool_spellings_and_follow_a_leading_space_token():
    tokens = [
        {"token": " ", "logprob": math.log(0.6), "top": [{"token": " ", "logprob": math.log(0.6)},
                                                        {"token": " Yes", "logprob": math.log(0.2)},
                                                        {"token": "yes", "logprob": math.log(0.1)}]},
        {"token": "No", "logprob": math.log(0.5), "top": [{"token": "No", "logprob": math.log(0.5)},
                                                         {"token": "▁YES", "logprob": math.log(0.25)}]},
    ]
    yes, no, maybe = choice_logprobs_from_tokens(tokens, ["Yes", "No", "Maybe"])
    assert yes == pytest.approx(math.log(0.2 + 0.1 + 0.6 * 0.25))  # spellings pooled, the space path followed
    assert no == pytest.approx(math.log(0.6 * 0.5))
    assert maybe == -math.inf  # not in any top-k: missing


def test_retry_after_in_seconds_milliseconds_and_http_date():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None


def test_a_response_without_choices_is_retried_not_answered():
    from mmsafety.served.client import _Retry

    with pytest.raises(_Retry, match="no choices"):
        normalise_response({"choices": []})
    ok = normalise_response({"choices": [{"message": {"content": None}, "finish_reason": "stop"}], "usage": None})
    assert ok["content"] == "" and ok["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}


def test_cache_key_covers_image_pixels_and_sampling_and_the_cache_persists(tmp_path):
    a, b = Image.new("RGB", (8, 8), (1, 2, 3)), Image.new("RGB", (8, 8), (1, 2, 4))
    base = {"model": "m", "messages": [{"image": pixel_fingerprint(a)}], "temperature": 0, "max_tokens": 16}
    assert request_key(base) == request_key(dict(reversed(list(base.items()))))  # canonical
    assert request_key(base) != request_key({**base, "messages": [{"image": pixel_fingerprint(b)}]})
    assert request_key(base) != request_key({**base, "max_tokens": 17})
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put(request_key(base), {"content": "Yes"})
    cache.close()
    assert ResponseCache(tmp_path / "c.sqlite").get(request_key(base)) == {"content": "Yes"}


def test_png_is_lossless_and_jpeg_is_not():
    im = Image.effect_noise((32, 32), 60).convert("RGB")
    assert decode_data_url(data_url(encode_image(im, "png"))).tobytes() == im.tobytes()
    assert decode_data_url(data_url(encode_image(im, "jpeg", 50), "jpeg")).tobytes() != im.tobytes()


@pytest.mark.parametrize("override, message", [
    ({"base_url": None}, "model.base_url is not set"),
    ({"base_url": "127.0.0.1:8000"}, "not an http(s) URL"),
    ({"image_format": "webp"}, "use png (lossless) or jpeg"),
    ({"max_connections": 0}, "model.max_connections=0: must be >= 1"),
    ({"top_logprobs": 21}, "the protocol allows 0-20"),
    ({"max_cost": 1.0}, "without model.price_per_million_tokens"),
    ({"backoff_s": -1}, "model.backoff_s=-1.0: must be >= 0 seconds"),
    ({"backoff_s": 5, "max_backoff_s": 2}, "model.max_backoff_s=2.0: must be >= model.backoff_s=5.0"),
])
def test_bad_settings_fail_in_one_line(override, message):
    cfg = {"name_or_path": "m", "base_url": "http://127.0.0.1:1/v1", "cache": False, **override}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        settings_from_config(cfg)
    assert "\n" not in str(e.value)


def test_cost_from_the_price_table_and_budgets_stop_before_the_next_request():
    acc = Accounting({"prompt": 2.5, "completion": 10.0}, max_requests=3, max_cost=0.01)
    acc.add_usage({"prompt_tokens": 1000, "completion_tokens": 100})
    assert acc.cost == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
    acc.requests = 2
    acc.check_budget()  # under both budgets
    acc.requests = 3
    with pytest.raises(BudgetExhausted, match="max_requests=3"):
        acc.check_budget()
    acc.requests, acc.prompt_tokens = 0, 4000
    with pytest.raises(BudgetExhausted, match="max_cost=0.01"):
        acc.check_budget()


def test_a_served_model_generates_and_scores_but_cannot_craft():
    capabilities.require(OpenAICompatibleAdapter, ["generate", "score_choices"], "the GOAT eval")
    with pytest.raises(ConfigError) as e:
        capabilities.require(OpenAICompatibleAdapter, ["pixel_loss"], "crafting an attack")
    assert str(e.value).startswith("crafting an attack needs a model that can pixel_loss") and "\n" not in str(e.value)


def test_the_served_presets_compose():
    from mmsafety.app import compose_config

    for preset in ("openai_compatible", "gpt_4o", "vllm_local"):
        cfg = compose_config("eval", [f"model={preset}"])
        s = settings_from_config(cfg.model)
        assert cfg.model.adapter == "openai_compatible" and s.image_format == "png" and s.temperature == 0
    assert compose_config("eval", ["model=openai_compatible", "model.name_or_path=a/b"]).model.name == "served-a-b"


def test_backoff_settings_come_from_the_model_config():
    from mmsafety.app import compose_config

    base = {"name_or_path": "m", "base_url": "http://127.0.0.1:1/v1", "cache": False}
    s = settings_from_config({**base, "backoff_s": 2, "max_backoff_s": 8})
    assert (s.backoff_s, s.max_backoff_s) == (2.0, 8.0)
    s = settings_from_config(base)  # absent: the defaults
    assert (s.backoff_s, s.max_backoff_s) == (0.5, 30.0)
    cfg = compose_config("eval", ["model=openai_compatible", "model.backoff_s=0.25", "model.max_backoff_s=4"])
    s = settings_from_config(cfg.model)
    assert (s.backoff_s, s.max_backoff_s) == (0.25, 4.0)
    for preset in ("gpt_4o", "vllm_local"):  # presets that do not name them get the defaults
        s = settings_from_config(compose_config("eval", [f"model={preset}"]).model)
        assert (s.backoff_s, s.max_backoff_s) == (0.5, 30.0)


def test_the_attack_refuses_a_served_model_in_one_line_before_loading_it():
    from mmsafety.errors import UserError
    from visual_attacks.cli import run_attack_job

    with pytest.raises(UserError) as e:  # base_url points nowhere: nothing may be loaded or sent
        run_attack_job("/nonexistent", "model=openai_compatible", "model.base_url=http://127.0.0.1:9/v1")
    assert "the craft stage (attack/objective=" in str(e.value) and "needs a model that can pixel_loss" in str(e.value)
    assert "served-organism (openai_compatible) can only: generate, score_choices" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_request_repeated_within_a_batch_is_sent_once(tmp_path):
    """Against a port where nothing listens: the one request sent fails, and both copies share its failure."""
    from mmsafety.served.client import Failure, ServedClient

    settings = settings_from_config({"name_or_path": "m", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0,
                                     "timeout_s": 2, "cache": False})
    client = ServedClient(settings)
    try:
        request = ({"model": "m", "messages": ["same"]}, lambda: {"model": "m", "messages": []})
        results = client.complete([request, request])
        assert client.accounting.requests == 1 and results[0] is results[1] and isinstance(results[0], Failure)
        assert results[0].reason == "connection error after 1 attempts"
    finally:
        client.close()


@pytest.mark.parametrize("argv, message", [
    (["--model", "nonexistent"], "error: model=nonexistent: no such option in 'model'"),
    (["--model", "gpt_4o"], "error: --model: serve a local model"),
    (["--api-key-env", "MMSAFETY_UNSET_VARIABLE"], "error: --api-key-env=MMSAFETY_UNSET_VARIABLE: that variable is not set"),
])
def test_mmsafety_serve_refuses_bad_arguments_in_one_line(argv, message, capsys):
    from mmsafety.serving.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith(message) and "\n" not in err
