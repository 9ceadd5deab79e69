"""Yes/No scoring pools the answer's spellings (issue 36 item 1).

`choice_logprobs` scores "Yes" as log(p("Yes") + p(" Yes")): which spelling a model starts its answer
with depends on its tokenizer and template. Every built-in tiny model's tokenizer maps both to one
token, so the pooling was never exercised. Qwen2.5-VL's real byte-level BPE (tests/fixtures, with the
real config shrunk and random weights: tests/skeletons.py) writes "Yes" and "ĠYes" as two tokens.

The reference is computed apart from the adapter: the real processor's inputs, one forward of the
transformers model, the next-token log-softmax, and the two tokens looked up by their vocabulary
strings; the pooled value is log(exp(a) + exp(b)) by hand. Random weights spread the next-token
distribution nearly evenly, so the two spellings are close and pooling adds about log 2 over either:
a max, the first spelling alone, or a sum of log-probabilities all miss by far more than the tolerance."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from mmsafety.models.loading import LoadOptions
from mmsafety.models.registry import adapter_class
from mmsafety.placement import resolve_placement
from tests.skeletons import SKELETONS, build_skeleton, unavailable_reason

NAME = "qwen2.5-vl-7b-instruct"
PROMPTS = ["Is this meme hateful? Answer: only Yes/No.", "Is this meme sarcastic? Answer: only Yes/No."]
SPELLINGS = {"Yes": ("Yes", "ĠYes"), "No": ("No", "ĠNo")}  # vocabulary strings: Ġ is byte-level BPE's space


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    reason = unavailable_reason(NAME)
    if reason:
        pytest.skip(reason)
    path = build_skeleton(NAME, tmp_path_factory.mktemp("skeleton") / NAME)
    return adapter_class(SKELETONS[NAME][2]).load(str(path), LoadOptions(), resolve_placement("cpu", "float32"))


def images() -> list[Image.Image]:
    gen = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(56, 56, 3, generator=gen) * 255).to(torch.uint8).numpy()) for _ in PROMPTS]


@torch.no_grad()
def next_token_logprobs(adapter, image: Image.Image, prompt: str) -> torch.Tensor:
    """log p(next token | chat-templated prompt, image) over the vocabulary, straight from transformers."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = adapter.processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = adapter.processor(text=[text], images=[image], return_tensors="pt")
    return adapter.model(**inputs).logits[0, -1].double().log_softmax(-1)


def test_the_two_spellings_are_different_tokens(qwen):
    ids = {s: qwen.tokenizer.convert_tokens_to_ids(s) for pair in SPELLINGS.values() for s in pair}
    assert len(set(ids.values())) == 4 and qwen.tokenizer.unk_token_id not in ids.values()
    for answer, (bare, spaced) in SPELLINGS.items():
        assert qwen.answer_ids(answer) == [ids[bare]] and qwen.answer_ids(" " + answer) == [ids[spaced]]


def test_choice_logprobs_is_the_log_sum_exp_over_both_spellings(qwen):
    scores = qwen.choice_logprobs(images(), PROMPTS, list(SPELLINGS))
    for row, image, prompt in zip(scores.tolist(), images(), PROMPTS):
        logp = next_token_logprobs(qwen, image, prompt)
        for got, (bare, spaced) in zip(row, SPELLINGS.values()):
            a, b = (logp[qwen.tokenizer.convert_tokens_to_ids(s)].item() for s in (bare, spaced))
            assert abs(a - b) < 2  # both spellings carry weight: pooling moves the score by > 0.1
            pooled = math.log(math.exp(a) + math.exp(b))
            assert math.isclose(got, pooled, abs_tol=1e-4), (prompt, bare, got, pooled, a, b)
