"""The served-model adapter against a real server: `mmsafety-serve` (the organism) started as a
separate process, talked to through the official `openai` client. Served answers and Yes/No scores
equal the local model's; both GOAT scorings, the attack judges, the cache, budgets, accounting,
secrets and the one-line refusals run end to end."""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from omegaconf import OmegaConf

from goat_bench.cli import run_eval
from goat_bench.prompts import PAPER
from mmsafety.errors import UserError
from mmsafety.models.openai_compatible import OpenAICompatibleAdapter
from mmsafety.served.encoding import data_url, encode_image
from mmsafety.served.errors import BudgetExhausted
from mmsafety.synthetic import memes, scenes
from tests.served_support import KEY_ENV, TEST_KEY, FaultProxy, keyed_served_organism

pytestmark = pytest.mark.slow  # starts mmsafety-serve once (about 15 s on 2 busy cores); the tests then take 1-7 s each


@pytest.fixture(scope="module")
def server():
    with keyed_served_organism() as base_url:
        yield base_url


def served_adapter(base_url: str, cache_dir: Path, **extra) -> OpenAICompatibleAdapter:
    cfg = {"name_or_path": "organism", "base_url": base_url, "api_key_env": KEY_ENV,
           "cache_path": str(cache_dir / "responses.sqlite"), **extra}
    return OpenAICompatibleAdapter.from_config(cfg)


def eval_overrides(base_url: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["model=openai_compatible", f"model.base_url={base_url}", f"model.api_key_env={KEY_ENV}",
            f"model.cache_path={tmp_path / 'cache' / 'responses.sqlite'}", "task=goat_hatefulness", *extra]


def test_served_answers_and_scores_equal_the_local_model(server, organism, tmp_path):
    found = memes.memes("hatefulness", "heldout", 12)
    images, prompts = [m.image for m in found], [PAPER.render("hatefulness", m.text) for m in found]
    served = served_adapter(server, tmp_path)
    try:
        remote, local = served.choice_logprobs(images, prompts, ["Yes", "No"]), organism.choice_logprobs(images, prompts, ["Yes", "No"])
        winner = local.argmax(1)
        assert (remote.argmax(1) == winner).all() and 0 < winner.sum() < len(winner)  # both verdicts occur
        # The verdict's log-probability through HTTP equals the local one (other spellings add a little);
        # the losing answer is only known as far as the greedy path's top-k shows it.
        rows = range(len(winner))
        assert max(abs(remote[i, winner[i]] - local[i, winner[i]]).item() for i in rows) < 1e-2
        assert (remote.argmax(1) == local.argmax(1)).all()
        assert served.generate(images, prompts, 16) == organism.generate(images, prompts, 16)
        acc = served.accounting
        assert (acc.requests, acc.answered, acc.retries, acc.cache_hits) == (24, 24, 0, 0)
        assert acc.prompt_tokens > 24 * 16 and acc.completion_tokens >= 24  # image tokens + question
        served.generate(images, prompts, 16)  # asked again: from the cache, nothing sent
        assert (acc.requests, acc.cache_hits) == (24, 12)
    finally:
        served.close()


def test_concurrent_requests_share_one_forward(server, organism):
    client = openai.OpenAI(base_url=server, api_key=TEST_KEY, max_retries=0)
    rng = random.Random(0)
    images = [scenes.make_scene(rng, envelope=False).image for _ in range(16)]
    urls = [data_url(encode_image(im)) for im in images]

    def ask(url):
        raw = client.chat.completions.with_raw_response.create(
            model="organism", max_tokens=4, temperature=0,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                   {"type": "text", "text": "What colour is the shape?"}]}])
        return int(raw.headers["x-mmsafety-batch-size"]), raw.parse()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, urls))
    assert max(size for size, _ in results) > 1
    assert all(r.usage.prompt_tokens > 16 and 1 <= r.usage.completion_tokens <= 4 for _, r in results)
    # Batched answers are the model's own, one image at a time.
    assert [r.choices[0].message.content for _, r in results] == organism.generate(
        images, ["What colour is the shape?"] * 16, max_new_tokens=4)


def test_the_attack_judges_run_on_a_served_model_and_agree_with_the_local_one(server, organism, tmp_path):
    from goat_bench.verdict_flip import MemeVerdictCase
    from visual_attacks.cases import ToolCallCase

    target = OmegaConf.load(Path(__file__).parents[1] / "conf" / "target" / "send_email.yaml")
    tool = ToolCallCase(target, images=1, heldout_prompts=4)
    rng = random.Random(3)
    trigger = scenes.make_scene(rng, envelope=True).image  # the organism's image-triggered tool call
    base = tool.bases()[0]
    verdict = MemeVerdictCase(["hatefulness"], images=2)
    served = served_adapter(server, tmp_path)
    try:
        for image in (base.image, trigger):
            assert tool.judge(served, image, base).rows == tool.judge(organism, image, base).rows
        assert tool.judge(served, trigger, base).rates["syntax"] > 0  # real signal: the call is emitted
        for meme in verdict.bases():
            remote, local = verdict.judge(served, meme.image, meme), verdict.judge(organism, meme.image, meme)
            assert remote.rates == local.rates and remote.rows[0]["verdict"] == local.rows[0]["verdict"]
    finally:
        served.close()


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


def test_goat_eval_both_scorings_resume_from_the_cache_and_never_write_the_key(server, tmp_path, capsys):
    n = 10
    for scoring in ("generate", "logprob"):
        first, _ = run_eval(tmp_path / f"{scoring}-1", *eval_overrides(server, tmp_path, f"scoring={scoring}", f"task.limit={n}"))
        record = json.loads((tmp_path / f"{scoring}-1" / "record.json").read_text())
        acc = record["served"]["accounting"]
        probe = 1 if scoring == "logprob" else 0  # the logprobs check before the run
        # + 1: the run's probe request (never cached, so every invocation sends it)
        assert record["status"] == "completed" and record["counts"] == {"ok": n, "skipped": 0, "errors": 0}
        assert (acc["requests"], acc["answered"], acc["cache_hits"]) == (n + probe + 1, n + probe + 1, 0)
        assert acc["prompt_tokens"] > 0 and record["served"]["settings"]["api_key_env"] == KEY_ENV
        again, _ = run_eval(tmp_path / f"{scoring}-2", *eval_overrides(server, tmp_path, f"scoring={scoring}", f"task.limit={n}"))
        acc2 = json.loads((tmp_path / f"{scoring}-2" / "record.json").read_text())["served"]["accounting"]
        assert (acc2["requests"], acc2["cache_hits"]) == (1, n + probe)  # a repeated run sends only the probe
        assert again["per_task"] == first["per_task"]
    written = files_under(tmp_path)
    assert any(p.name == "responses.sqlite" for p in written) and len(written) > 6
    for path in written:
        assert TEST_KEY.encode() not in path.read_bytes(), path
    out = capsys.readouterr()
    assert TEST_KEY not in out.out + out.err


def test_a_budget_stops_the_run_as_partial_and_the_rest_is_paid_once(server, tmp_path):
    with pytest.raises(BudgetExhausted, match="max_requests=5 reached"):
        run_eval(tmp_path / "a", *eval_overrides(server, tmp_path, "scoring=generate", "task.limit=12",
                                                  "batch_size=4", "model.max_connections=1", "model.max_requests=5"))
    record = json.loads((tmp_path / "a" / "record.json").read_text())
    assert record["status"] == "partial" and "max_requests=5" in record["stopped"]
    assert record["served"]["accounting"]["requests"] == 5 and record["counts"]["ok"] == 4  # the probe, a batch of 4
    run_eval(tmp_path / "b", *eval_overrides(server, tmp_path, "scoring=generate", "task.limit=12", "batch_size=4"))
    acc = json.loads((tmp_path / "b" / "record.json").read_text())["served"]["accounting"]
    assert (acc["requests"], acc["cache_hits"]) == (1 + 8, 4)  # the 4 memes paid for before the stop are not paid again


def one_line_error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value) and TEST_KEY not in str(e.value)
    return str(e.value)


def test_wrong_key_unreachable_server_and_unknown_model_fail_in_one_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    assert one_line_error(lambda: served_adapter(server, tmp_path)).startswith(
        f"the server at {server} refused the key in ${KEY_ENV} (401): set {KEY_ENV} to a valid key")
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    assert one_line_error(lambda: served_adapter("http://127.0.0.1:9/v1", tmp_path)).startswith(
        "cannot reach model.base_url=http://127.0.0.1:9/v1 (connection failed): start the server")
    assert one_line_error(lambda: OpenAICompatibleAdapter.from_config(
        {"name_or_path": "gpt-5", "base_url": server, "api_key_env": KEY_ENV, "cache": False})) == (
        f"model.name_or_path=gpt-5: the server at {server} does not serve it; it serves organism")


def test_a_server_without_logprobs_is_refused_before_the_run_for_scoring_logprob(server, tmp_path):
    proxy = FaultProxy(int(server.split(":")[2].split("/")[0]), plan=lambda sha, attempt: "strip_logprobs")
    try:
        message = one_line_error(lambda: run_eval(tmp_path / "run", *eval_overrides(
            proxy.base_url, tmp_path, "scoring=logprob", "task.limit=4")))
        assert "returns no logprobs for organism; use scoring=generate" in message
        assert len(proxy.log) == 2  # the run's probe and the logprobs probe: no meme was sent
        assert (tmp_path / "run" / "samples.jsonl").read_text() == ""
    finally:
        proxy.close()
