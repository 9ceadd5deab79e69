"""`mmsafety-serve` faithful to the chat-completions protocol, in process (FastAPI's TestClient, the
organism behind it): every field the official `openai` client can send is honoured or refused with
a 400 naming it; client mistakes are 400s; roles reach the model through its chat template; the
sampling fields act as OpenAI documents them, checked against references computed here from the
model's own forward pass; a stream read by the `openai` client equals the plain answer."""

from __future__ import annotations

import math
import random
from collections import Counter

import openai
import pytest
import torch
from fastapi.testclient import TestClient
from openai.types.chat import completion_create_params

from mmsafety.served.encoding import data_url, encode_image
from mmsafety.serving.app import create_app
from mmsafety.serving.protocol import HONOURED, NOT_USED
from mmsafety.synthetic import scenes

QUESTION = "What colour is the shape?"
KEY = "sk-protocol-test"


@pytest.fixture(scope="module")
def client(organism):
    with TestClient(create_app(organism, "organism", api_key=KEY, max_batch=64),
                    headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def images():
    rng = random.Random(5)
    return [scenes.make_scene(rng, envelope=i % 2 == 1).image for i in range(4)]


def user(image, text=QUESTION) -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(encode_image(image))}},
                                        {"type": "text", "text": text}]}


def ask(client, messages, **fields):
    return client.post("/v1/chat/completions", json={"model": "organism", "messages": messages, **fields})


def refused(response, param: str) -> str:
    """The message of a 400 in OpenAI's error shape that names `param`."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and param.split("[")[0].split(".")[0] in error["message"], error
    return error["message"]


# A value other than the default for every field the official client can send (fields a newer client
# adds get a generic value: the server must still honour or refuse them by name).
NON_DEFAULT = {
    "audio": {"voice": "alloy", "format": "wav"}, "frequency_penalty": 0.5, "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object"}}], "logit_bias": {"5": 1.0}, "logprobs": True,
    "max_completion_tokens": 4, "max_tokens": 4, "metadata": {"k": "v"}, "modalities": ["text", "audio"], "n": 2,
    "parallel_tool_calls": True, "prediction": {"type": "content", "content": "x"}, "presence_penalty": 0.5,
    "prompt_cache_key": "k", "prompt_cache_retention": "24h", "reasoning_effort": "low",
    "response_format": {"type": "json_object"}, "safety_identifier": "u1", "seed": 3, "service_tier": "flex",
    "stop": ["\n"], "store": True, "stream_options": {"include_usage": True}, "temperature": 0.7,
    "tool_choice": "required", "tools": [{"type": "function", "function": {"name": "send_email"}}], "top_logprobs": 2,
    "top_p": 0.9, "user": "u1", "verbosity": "low", "web_search_options": {},
}


@pytest.mark.parametrize("name", sorted(set(completion_create_params.CompletionCreateParamsBase.__annotations__)
                                        - {"model", "messages"}))
def test_every_field_of_the_official_client_is_honoured_or_refused_by_name(client, images, name):
    extra = {"logprobs": True} if name == "top_logprobs" else {"stream": True} if name == "stream_options" else {}
    fields = {"max_tokens": 4, **extra, name: NON_DEFAULT.get(name, {"x": 1})}
    response = ask(client, [user(images[0])], **fields)
    if name in HONOURED or name in NOT_USED:
        assert response.status_code == 200, response.text
    else:
        refused(response, name)


def test_tools_json_mode_and_unknown_fields_are_refused_by_name(client, images):
    assert "cannot force the model to call" in refused(ask(client, [user(images[1])], tool_choice="required",
                                                           tools=NON_DEFAULT["tools"]), "tool_choice")
    assert "JSON" in refused(ask(client, [user(images[1])], response_format={"type": "json_schema", "json_schema": {
        "name": "v", "schema": {"type": "object"}}}), "response_format")
    assert refused(ask(client, [user(images[1])], top_k=5), "top_k") == "Unrecognized request argument supplied: top_k"
    # The harmless forms a client may always send are accepted.
    assert ask(client, [user(images[1])], max_tokens=2, tools=[], tool_choice="none", response_format={"type": "text"},
               store=False, user="someone").status_code == 200


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": -1}, "max_tokens"), ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": 10 ** 6}, "max_tokens"), ({"max_completion_tokens": 10 ** 6}, "max_completion_tokens"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_tokens"), ({"n": 0}, "n"), ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"), ({"logit_bias": {"10000000": 5}}, "logit_bias"), ({"logit_bias": {"5": 500}}, "logit_bias"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "gpt-5"}, "model"),
])
def test_client_mistakes_in_fields_are_400s_naming_the_field(client, images, fields, param):
    response = ask(client, [user(images[0])], **fields)
    if param == "model":  # an unknown model is OpenAI's 404
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    else:
        refused(response, param)


def test_max_completion_tokens_caps_the_answer_and_a_400_names_the_field_sent(client, images):
    # OpenAI's newer name for max_tokens: it caps the answer the same way
    for n in (1, 3):
        body = ask(client, [user(images[1])], max_completion_tokens=n, temperature=0).json()
        assert body["usage"]["completion_tokens"] <= n and body["choices"][0]["finish_reason"] == "length"
        assert body["choices"] == ask(client, [user(images[1])], max_tokens=n, temperature=0).json()["choices"]
    # the same value in both fields is one request, not a disagreement
    assert ask(client, [user(images[1])], max_tokens=2, max_completion_tokens=2).status_code == 200
    # past the context of 512, the 400 names the field the client sent, in param and message alike
    for field in ("max_completion_tokens", "max_tokens"):
        message = refused(ask(client, [user(images[1])], **{field: 500}), field)
        assert f"{field} asks for 500" in message and "maximum context length is 512" in message
        other = ({"max_tokens", "max_completion_tokens"} - {field}).pop()
        assert other not in message
        # a text alone too long for the context: refused on the messages, naming the field in its reason
        long_text = [user(images[1], text="colour " * 600)]
        message = refused(ask(client, long_text, **{field: 8}), "messages")
        assert f"{field} asks for 8" in message and other not in message


def test_client_mistakes_in_messages_are_400s_never_5xx(client, images):
    def with_url(url):
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "q"}]}]

    at = "messages[0].content[0].image_url.url"
    assert "not a readable image" in refused(ask(client, with_url("data:image/png;base64,aGVsbG8=")), at)
    refused(ask(client, with_url("data:image/png;base64,@@not-base64@@")), at)
    assert "fetches no URLs" in refused(ask(client, with_url("https://example.com/cat.png")), at)
    refused(ask(client, [{"role": "tool", "content": "x", "tool_call_id": "1"}]), "messages[0].tool_call_id")
    refused(ask(client, [{"role": "tool", "content": "x"}]), "messages[0].role")
    refused(ask(client, []), "messages")
    refused(ask(client, [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
            "messages[0].content[0].type")
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def forward_logits(organism, image, prompt_text: str) -> torch.Tensor:
    """The model's next-token logits after `prompt_text` (chat template already applied), image expanded
    by the processor: the reference the sampling fields are checked against."""
    enc = organism.processor(text=[prompt_text], images=[image], return_tensors="pt")
    with torch.no_grad():
        return organism.model(**enc).logits[0, -1].float()


def template_text(turns: list[tuple[str, str]]) -> str:
    """The organism's chat format written out by hand (its chat_template.jinja): the reference for roles."""
    out = ""
    for role, text in turns:
        out += f"USER: <image>\n{text} " if role == "user+image" else f"USER: {text} " if role == "user" else f"ASSISTANT: {text}</s>"
    return out + "ASSISTANT:"


def greedy_reference(organism, image, prompt_text: str, steps: int, bias=(), presence=0.0, frequency=0.0) -> list[int]:
    """Token ids of a plain greedy loop (whole forward every step) with OpenAI's logit bias and penalties."""
    enc = organism.processor(text=[prompt_text], images=[image], return_tensors="pt")
    ids, out = enc["input_ids"], []
    for _ in range(steps):
        with torch.no_grad():
            logits = organism.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    pixel_values=enc["pixel_values"]).logits[0, -1].float()
        for token, value in bias:
            logits[token] += value
        for token, count in Counter(out).items():
            logits[token] -= count * frequency + presence
        token = int(logits.argmax())
        out.append(token)
        if token == organism.tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_greedy_answers_equal_the_local_model_and_max_tokens_defaults_to_the_context(client, organism, images):
    local = organism.generate(images, [QUESTION] * len(images), max_new_tokens=12)
    served = [ask(client, [user(im)], max_tokens=12, temperature=0).json() for im in images]
    assert [s["choices"][0]["message"]["content"] for s in served] == local
    unlimited = ask(client, [user(images[1])], temperature=0).json()["choices"][0]
    reference = organism.tokenizer.decode(greedy_reference(organism, images[1], template_text([("user+image", QUESTION)]), 60),
                                          skip_special_tokens=True).strip()
    assert unlimited["message"]["content"] == reference and unlimited["finish_reason"] == "stop"


def test_roles_reach_the_model_through_its_chat_template(client, organism, images):
    turns = [("user+image", QUESTION), ("assistant", "blue"), ("user", "Are you sure? Say the colour again.")]
    messages = [user(images[0]), {"role": "assistant", "content": "blue"},
                {"role": "user", "content": [{"type": "text", "text": turns[2][1]}]}]
    body = ask(client, messages, max_tokens=6, temperature=0).json()
    text = template_text(turns)
    expected_ids = organism.processor(text=[text], images=[images[0]], return_tensors="pt")["input_ids"]
    assert body["usage"]["prompt_tokens"] == expected_ids.shape[1]
    reference = greedy_reference(organism, images[0], text, 6)
    assert body["choices"][0]["message"]["content"] == organism.tokenizer.decode(reference, skip_special_tokens=True).strip()
    # The organism's template renders any non-user turn as ASSISTANT: a system turn would reach the model
    # as something it said, so it is refused rather than mislabelled.
    assert "no system role" in refused(ask(client, [{"role": "system", "content": "Be brief."}, user(images[0])]),
                                       "messages[0].role")


def test_a_template_with_a_system_role_gets_the_system_turn(organism, images):
    processor = organism.processor
    original = processor.chat_template
    processor.chat_template = ("{% for message in messages %}{% if message['role'] == 'system' %}SYSTEM: "
                               "{{ message['content'][0]['text'] }}\n{% endif %}{% endfor %}"
                               + original.replace("{% if message['role'] == 'user' %}",
                                                  "{% if message['role'] == 'system' %}{% elif message['role'] == 'user' %}"))
    try:
        with TestClient(create_app(organism, "organism")) as c:
            body = ask(c, [{"role": "developer", "content": "Answer in one word."}, user(images[0])], max_tokens=2,
                       temperature=0).json()
    finally:
        processor.chat_template = original
    text = "SYSTEM: Answer in one word.\n" + template_text([("user+image", QUESTION)])
    assert body["usage"]["prompt_tokens"] == organism.processor(text=[text], images=[images[0]], return_tensors="pt")[
        "input_ids"].shape[1]
    reference = greedy_reference(organism, images[0], text, 2)
    assert body["choices"][0]["message"]["content"] == organism.tokenizer.decode(reference, skip_special_tokens=True).strip()


def test_stop_strings_cut_the_answer_before_the_first_match(client, organism, images):
    full = organism.generate([images[1]], [QUESTION], max_new_tokens=16)[0]
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop and full.find(stop) > 0
    body = ask(client, [user(images[1])], max_tokens=16, temperature=0, stop=[stop, "never appears"]).json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == full[: full.find(stop)].rstrip() and choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < ask(client, [user(images[1])], max_tokens=16, temperature=0).json()[
        "usage"]["completion_tokens"]


def test_logit_bias_and_penalties_equal_a_hand_written_greedy_loop(client, organism, images):
    text = template_text([("user+image", QUESTION)])
    tok = organism.tokenizer
    first = greedy_reference(organism, images[0], text, 1)[0]
    the = tok.convert_tokens_to_ids("Ġthe")
    # A bias that makes " the" win by about 3 logits: it repeats until a penalty has taken those 3 back.
    logits = forward_logits(organism, images[0], text)
    lift = [(the, float(logits.max() - logits[the]) + 3.0)]
    cases = [dict(bias=[(first, -100.0)]), dict(bias=[(the, 30.0)]), dict(bias=lift),
             dict(bias=lift, frequency=2.0), dict(bias=lift, presence=2.0, frequency=0.5), dict(bias=lift, frequency=-2.0)]
    references = []
    for case in cases:
        reference = greedy_reference(organism, images[0], text, 8, **case)
        references.append(reference)
        fields = {"logit_bias": {str(t): v for t, v in case.get("bias", [])},
                  "presence_penalty": case.get("presence", 0.0), "frequency_penalty": case.get("frequency", 0.0)}
        body = ask(client, [user(images[0])], max_tokens=8, temperature=0, **fields).json()
        assert body["choices"][0]["message"]["content"] == tok.decode(reference, skip_special_tokens=True).strip(), case
    # The cases can tell a wrong implementation: bias and each penalty change the answer.
    assert references[0] != greedy_reference(organism, images[0], text, 8)
    assert references[3] != references[2] and references[4] != references[2]


def test_temperature_and_top_p_sample_the_models_distribution_with_a_seed(client, organism, images):
    text = template_text([("user+image", QUESTION)])
    logits = forward_logits(organism, images[2], text)
    samples = []
    for seed in (0, 1000):
        body = ask(client, [user(images[2])], max_tokens=1, temperature=2.0, n=128, seed=seed, logprobs=True).json()
        samples += [c["logprobs"]["content"][0]["token"] for c in body["choices"]]
    counts = Counter(samples)

    def chi_square(temperature: float) -> float:  # over tokens with expected count >= 5, the rest pooled
        p = torch.softmax(logits / temperature, -1)
        expected = {organism.tokenizer.decode([i]): len(samples) * p[i].item() for i in range(len(p))}
        big = {t: e for t, e in expected.items() if e >= 5}
        rest_e, rest_o = len(samples) - sum(big.values()), len(samples) - sum(counts[t] for t in big)
        return sum((counts[t] - e) ** 2 / e for t, e in big.items()) + (rest_o - rest_e) ** 2 / max(rest_e, 1e-9), len(big)

    stat, dof = chi_square(2.0)
    assert stat < dof + 6 * math.sqrt(2 * dof) + 10  # far inside: a plausible statistic for the right distribution
    wrong, _ = chi_square(1.0)
    assert wrong > 3 * stat  # and the check can tell temperature 1 from 2
    # Same seed, same choices; choice i of seed s is the single choice of seed s + i.
    again = ask(client, [user(images[2])], max_tokens=4, temperature=1.5, n=3, seed=7).json()["choices"]
    assert again == ask(client, [user(images[2])], max_tokens=4, temperature=1.5, n=3, seed=7).json()["choices"]
    assert again[2]["message"] == ask(client, [user(images[2])], max_tokens=4, temperature=1.5, seed=9).json()["choices"][0]["message"]
    # top_p: only the nucleus of the temperature-scaled distribution is ever drawn.
    p = torch.softmax(logits / 2.0, -1)
    ordered, order = p.sort(descending=True)
    nucleus = {organism.tokenizer.decode([int(i)]) for i, before in zip(order, ordered.cumsum(0) - ordered) if before < 0.6}
    body = ask(client, [user(images[2])], max_tokens=1, temperature=2.0, top_p=0.6, n=64, seed=3, logprobs=True).json()
    drawn = {c["logprobs"]["content"][0]["token"] for c in body["choices"]}
    assert drawn <= nucleus and len(nucleus) < len(counts)


def test_a_stream_read_by_the_openai_client_equals_the_plain_answer(client, images):
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=client, max_retries=0)
    for image in images[:2]:
        messages = [user(image)]
        plain = oa.chat.completions.create(model="organism", messages=messages, max_tokens=20, temperature=0, logprobs=True)
        chunks = list(oa.chat.completions.create(model="organism", messages=messages, max_tokens=20, temperature=0,
                                                 logprobs=True, stream=True, stream_options={"include_usage": True}))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        text = "".join(pieces)
        assert text == plain.choices[0].message.content and text
        # Token by token, not the whole answer in one event: a multi-token answer arrives in several pieces.
        assert len(pieces) > 1 if plain.usage.completion_tokens > 2 else pieces
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            plain.choices[0].finish_reason]
        streamed_tokens = [t.token for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        assert streamed_tokens == [t.token for t in plain.choices[0].logprobs.content]
        assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_health_models_and_unknown_paths_answer_in_openais_shape(client):
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"  # open without the key
    assert client.get("/v1/models", headers={"Authorization": ""}).status_code == 401
    assert client.get("/v1/models/organism").json()["id"] == "organism"
    missing = client.get("/v1/models/gpt-5")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/nothing-here").json()["error"]["type"] == "invalid_request_error"
