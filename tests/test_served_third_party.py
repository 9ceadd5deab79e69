"""Third-party software on both sides of the protocol: `inspect_ai` and `litellm` as clients of
`mmsafety-serve` (a tiny inspect task with an image; litellm's completion, plain and streamed), run
against a server this test starts on 127.0.0.1, and LiteLLM's proxy (`mock_response`, offline) as
the server behind `model=openai_compatible`. Each part skips, saying why, where its package is absent."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmsafety.served.encoding import data_url, encode_image
from mmsafety.synthetic import scenes
from tests.served_support import KEY_ENV, TEST_KEY, child_env, free_port, keyed_served_organism

pytestmark = pytest.mark.slow  # starts mmsafety-serve (about 15 s on 2 busy cores) or LiteLLM's proxy

QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def server():
    with keyed_served_organism() as base_url:
        yield base_url


def inspect_task(images, targets, system: str | None = None):
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser, ContentImage, ContentText
    from inspect_ai.scorer import exact
    from inspect_ai.solver import generate

    samples = []
    for i, (image, target) in enumerate(zip(images, targets)):
        messages = [ChatMessageSystem(content=system)] if system else []
        messages.append(ChatMessageUser(content=[ContentImage(image=data_url(encode_image(image))),
                                                 ContentText(text=QUESTION)]))
        samples.append(Sample(input=messages, target=target, id=i))
    return Task(dataset=samples, solver=generate(), scorer=exact())


def run_inspect(task, base_url: str, log_dir: Path, **config):
    from inspect_ai import eval as inspect_eval
    from inspect_ai._util.error import PrerequisiteError
    from inspect_ai.model import GenerateConfig, get_model

    # inspect_ai 0.3.285's openai-api provider needs openai >= 3.4; pyproject allows openai >= 1.40, < 4, so
    # an environment holding an older openai skips here rather than fails
    try:
        get_model("openai-api/mmsafety-serve/organism", base_url=base_url, api_key=TEST_KEY)
    except PrerequisiteError as e:
        pytest.skip(str(e).splitlines()[0])
    model = get_model("openai-api/mmsafety-serve/organism", base_url=base_url, api_key=TEST_KEY,
                      config=GenerateConfig(max_retries=0, **config))
    log, = inspect_eval(task, model=model, log_dir=str(log_dir), display="none", max_samples=4, fail_on_error=False)
    return log


def test_inspect_ai_scores_the_served_organism_as_the_local_one_answers(server, organism, tmp_path):
    rng = random.Random(11)
    images = [scenes.make_scene(rng, envelope=False).image for _ in range(4)]
    local = organism.generate(images, [QUESTION] * 4, max_new_tokens=8)
    log = run_inspect(inspect_task(images, local), server, tmp_path, temperature=0, max_tokens=8)
    assert log.status == "success", log.error
    answers = [s.output.completion for s in sorted(log.samples, key=lambda s: s.id)]
    assert answers == local
    metrics = log.results.scores[0].metrics  # exact() reports its mean (or accuracy, by inspect version)
    assert (metrics.get("mean") or metrics.get("accuracy")).value == 1.0
    usage = log.stats.model_usage["openai-api/mmsafety-serve/organism"]
    assert usage.input_tokens > 4 * 40 and 4 <= usage.output_tokens <= 32  # 64 image tokens per prompt at most


def test_inspect_ai_sees_the_servers_refusal_by_name_not_a_silent_answer(server, tmp_path):
    rng = random.Random(12)
    images = [scenes.make_scene(rng, envelope=False).image for _ in range(2)]
    # The organism's chat template has no system role: inspect's system message is refused, not folded in.
    log = run_inspect(inspect_task(images, ["x", "x"], system="Answer in one word."), server, tmp_path / "system",
                      temperature=0, max_tokens=4)
    errors = [s.error.message for s in log.samples if s.error]
    # inspect_ai elides the middle of long error reprs (how much depends on its and openai's versions): the
    # server's reason, naming the role it refuses, is what must come through.
    assert len(errors) == 2 and all("role='system'" in e.replace("\\", "") and "has no system role" in e
                                    for e in errors), errors
    # A field the server cannot honour (a JSON schema) comes back as a 400 naming it.
    from inspect_ai.model import ResponseSchema
    from inspect_ai.util import JSONSchema

    schema = ResponseSchema(name="verdict", json_schema=JSONSchema(type="object"))
    log = run_inspect(inspect_task(images, ["x", "x"]), server, tmp_path / "schema", max_tokens=4, response_schema=schema)
    errors = [s.error.message for s in log.samples if s.error]
    assert len(errors) == 2 and all("'param': 'response_format'" in e.replace("\\", "")
                                    or "no JSON mode or JSON schema" in e for e in errors), errors  # elided or not


# litellm's client, run in LiteLLM's own interpreter (see litellm_python): plain and streamed answers to
# each message list on argv, then the refusal of a tool request, printed as one JSON object.
LITELLM_CLIENT = """
import json, sys
import litellm
base, key, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"plain": [], "streamed": []}
for messages in json.loads(sys.stdin.read()):
    common = dict(model="openai/organism", api_base=base, api_key=key, messages=messages, temperature=0,
                  max_tokens=max_tokens, num_retries=0)
    out["plain"].append(litellm.completion(**common).choices[0].message.content)
    out["streamed"].append("".join(c.choices[0].delta.content or "" for c in litellm.completion(**common, stream=True)
                                   if c.choices))
try:
    litellm.completion(**common, tools=[{"type": "function", "function": {"name": "send_email",
                       "parameters": {"type": "object", "properties": {}}}}], tool_choice="required")
    out["tools"] = "accepted"
except litellm.BadRequestError as e:
    out["tools"] = "BadRequestError: " + str(e)
print(json.dumps(out))
"""


def test_litellm_as_a_client_gets_the_local_answers_plain_and_streamed_and_the_refusals(server, organism):
    python = litellm_python()
    rng = random.Random(13)
    images = [scenes.make_scene(rng, envelope=i == 1).image for i in range(2)]
    local = organism.generate(images, [QUESTION] * 2, max_new_tokens=12)
    conversations = [[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(encode_image(image))}},
                                                   {"type": "text", "text": QUESTION}]}] for image in images]
    done = subprocess.run([python, "-c", LITELLM_CLIENT, server, TEST_KEY, "12"], input=json.dumps(conversations),
                          capture_output=True, text=True, timeout=300,
                          env=child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False"))
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["plain"] == local and answers["streamed"] == local
    assert answers["tools"].startswith("BadRequestError") and "tools" in answers["tools"]


LITELLM_KEY = "sk-litellm-proxy-test-5b2e"
# `make setup-test` installs LiteLLM's proxy into a virtual environment of its own (litellm pins
# huggingface-hub<2, which transformers 5 cannot share); $MMSAFETY_LITELLM_PYTHON names another one.
LITELLM_VENV_PYTHON = Path(__file__).resolve().parents[1] / ".venv-litellm" / "bin" / "python"


def litellm_python() -> str:
    """The interpreter whose LiteLLM proxy imports: $MMSAFETY_LITELLM_PYTHON, the project's .venv-litellm,
    or this one; skips (saying why) where none has it."""
    candidates = [os.environ.get("MMSAFETY_LITELLM_PYTHON"), str(LITELLM_VENV_PYTHON), sys.executable]
    why = "no interpreter tried"
    for python in filter(None, candidates):
        if not Path(python).exists():
            continue
        probe = subprocess.run([python, "-c", "import litellm.proxy.proxy_server"], capture_output=True, text=True,
                               env=child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False"))
        if probe.returncode == 0:
            return python
        why = f"{python}: {(probe.stderr.strip().splitlines() or ['import failed'])[-1]}"
    pytest.skip(f"LiteLLM's proxy cannot start here (run `make setup-test` to install it): {why}")


@pytest.fixture(scope="module")
def litellm_proxy(tmp_path_factory):
    """LiteLLM's proxy on a free loopback port serving `organism` as a mock that always answers "No"."""
    python = litellm_python()
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": "organism",
                        "litellm_params": {"model": "openai/organism", "api_key": "unused", "mock_response": "No"}}],
        "general_settings": {"master_key": LITELLM_KEY}}))
    port = free_port()
    env = child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
    proc = subprocess.Popen([python, "-m", "litellm.proxy.proxy_cli", "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.skip(f"LiteLLM's proxy exited: {proc.stdout.read()[-500:]}")
            try:
                request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {LITELLM_KEY}"})
                urllib.request.urlopen(request, timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def eval_against(base_url: str, folder: Path, *extra: str):
    from goat_bench.cli import run_eval

    return run_eval(folder, "model=openai_compatible", f"model.base_url={base_url}", "model.name_or_path=organism",
                    f"model.api_key_env={KEY_ENV}", "model.cache=false", "task=goat_hatefulness", "scoring=generate",
                    "task.limit=5", *extra)


def test_openai_compatible_runs_against_litellms_proxy(litellm_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, LITELLM_KEY)
    eval_against(litellm_proxy, tmp_path / "good")
    record = json.loads((tmp_path / "good" / "record.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "good" / "samples.jsonl").read_text().splitlines()]
    assert record["status"] == "completed" and record["counts"] == {"ok": 5, "skipped": 0, "errors": 0}
    assert len(samples) == 5 and all("No" in json.dumps(s) for s in samples)  # the mock's answer, parsed as No
    assert record["served"]["accounting"]["answered"] >= 5
    assert LITELLM_KEY not in (tmp_path / "good" / "record.json").read_text()


def test_a_wrong_key_at_litellms_proxy_stops_the_run_before_its_first_sample(litellm_proxy, tmp_path, monkeypatch):
    """The proxy answers every chat request with 400 ("No connected db.") for a key it does not know
    (while /models answers). The pre-run probe sends one real request, so the run stops in one line
    before any sample is recorded, its record says failed, and the key is written nowhere."""
    from mmsafety.errors import UserError

    monkeypatch.setenv(KEY_ENV, "sk-not-the-proxys-key")
    with pytest.raises(UserError) as refused:
        eval_against(litellm_proxy, tmp_path / "bad")
    assert "\n" not in str(refused.value) and "sk-not-the-proxys-key" not in str(refused.value)
    record = json.loads((tmp_path / "bad" / "record.json").read_text())
    assert record["status"] == "failed" and record["counts"] == {"ok": 0, "skipped": 0, "errors": 0}
    samples = tmp_path / "bad" / "samples.jsonl"
    assert not samples.exists() or not samples.read_text().strip()
    assert "sk-not-the-proxys-key" not in "".join(p.read_text(errors="replace") for p in (tmp_path / "bad").rglob("*") if p.is_file())
