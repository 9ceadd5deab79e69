"""Token batches and sequence scoring (mmsafety/models/sequences.py) checked against references written
here: padded lists by hand, per-position cross-entropy of a full forward, a log-sum-exp in floats, and a
tiny random Llama (transformers, no download) scored on each prompt + choice one sequence at a time.
Written for `make mutation` (its `sequences` group); each test fails on a plausible wrong implementation."""

from __future__ import annotations

import math

import pytest
import torch

from mmsafety.models import sequences as seq
from mmsafety.models.sequences import IGNORE, TokenCache, TokenWeightedTarget


def test_pad_batch_pads_on_the_side_asked_and_masks_only_the_padding():
    ids, mask = seq.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = seq.pad_batch([[5, 6, 7], [8]], pad_id=9, side="left")
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = seq.pad_batch([[1], [2]], pad_id=0)
    assert ids.tolist() == [[1], [2]] and mask.tolist() == [[1], [1]]


def test_prompt_target_batch_labels_the_target_tokens_only():
    ids, mask, labels = seq.prompt_target_batch([[1, 2], [3]], [[4], [5, 6, 7]], pad_id=0)
    assert ids.tolist() == [[1, 2, 4, 0], [3, 5, 6, 7]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert labels.tolist() == [[IGNORE, IGNORE, 4, IGNORE], [IGNORE, 5, 6, 7]] and IGNORE == -100
    assert labels.dtype == torch.long


class TinyLM(torch.nn.Module):
    """A decoder with the `.model` / `.lm_head` split the adapters use, whose hidden state at a position
    depends on the tokens before it (a causal running mean of embeddings), so a shift error shows."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(vocab, dim, generator=gen))
        self.lm_head = torch.nn.Linear(dim, vocab)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.randn(vocab, dim, generator=gen))
            self.lm_head.bias.copy_(torch.randn(vocab, generator=gen))
        outer = self

        class Body(torch.nn.Module):
            def forward(self, input_ids=None, attention_mask=None, use_cache=None, **_):
                x = outer.embed[input_ids] * attention_mask[..., None]
                hidden = x.cumsum(1) / attention_mask.cumsum(1).clamp_min(1)[..., None]
                return type("Out", (), {"last_hidden_state": hidden})()

        self.model = Body()


def test_token_nll_is_the_cross_entropy_of_each_labelled_next_token():
    model = TinyLM()
    ids, mask, labels = seq.prompt_target_batch([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    nll, rows = seq.token_nll(model, ids, mask, labels)
    logits = model.lm_head(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)
    expected, expected_rows = [], []
    for r in range(2):
        for t in range(1, ids.shape[1]):  # the label at t is predicted from position t - 1
            if labels[r, t] != IGNORE:
                expected.append(-logits[r, t - 1].log_softmax(-1)[labels[r, t]])
                expected_rows.append(r)
    torch.testing.assert_close(nll, torch.stack(expected))
    assert rows.tolist() == expected_rows == [0, 0, 1, 1, 1]
    assert nll.dtype == torch.float32


def test_per_row_sums_or_averages_each_rows_values():
    values, rows = torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([0, 0, 0, 2])
    assert seq.per_row(values, rows, 4, mean=False).tolist() == [6.0, 0.0, 10.0, 0.0]
    assert seq.per_row(values, rows, 4, mean=True).tolist() == [2.0, 0.0, 10.0, 0.0]


def test_spelling_variants_are_distinct_shortest_first_and_never_extend_each_other():
    def vocab(table):
        return lambda text: list(table[text])

    assert seq.spelling_variants("Yes", vocab({"Yes": [5], " Yes": [7]})) == [[5], [7]]
    assert seq.spelling_variants("Yes", vocab({"Yes": [5], " Yes": [5]})) == [[5]]
    assert seq.spelling_variants("Yes", vocab({"Yes": [3, 5], " Yes": [7]})) == [[7], [3, 5]]
    # " Yes" as [5, 9] extends "Yes" = [5]: the event is inside the shorter one's, so it is left out.
    assert seq.spelling_variants("Yes", vocab({"Yes": [5], " Yes": [5, 9]})) == [[5]]
    assert seq.spelling_variants("Yes", vocab({"Yes": [5, 9], " Yes": [5]})) == [[5]]
    assert seq.spelling_variants("Yes", vocab({"Yes": [], " Yes": [7]})) == [[7]]
    asked = []
    seq.spelling_variants("  No", lambda text: asked.append(text) or [1])
    assert asked == ["  No", " No"]  # the spaced spelling has exactly one space
    flat, owners = seq.choice_variants(["Yes", "No"], vocab({"Yes": [5], " Yes": [7], "No": [6], " No": [6]}))
    assert flat == [[5], [7], [6]] and owners == [0, 0, 1]


def test_combine_variants_is_the_log_of_the_summed_probabilities_per_choice():
    scores = torch.tensor([[math.log(0.2), math.log(0.1), math.log(0.3)],
                           [math.log(0.05), math.log(0.6), math.log(0.01)]])
    got = seq.combine_variants(scores, [0, 1, 0], 2)
    expected = [[math.log(0.2 + 0.3), math.log(0.1)], [math.log(0.05 + 0.01), math.log(0.6)]]
    torch.testing.assert_close(got, torch.tensor(expected))


def _chars(text, eos=False):
    """A tokenizer where a leading space joins the next letter (' a' is one token): tokenising a text
    whole and in pieces then differ, as with byte-level BPE."""
    out, i = [], 0
    while i < len(text):
        if text[i] == " " and i + 1 < len(text):
            out.append(1000 + ord(text[i + 1]))
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return out + ([2] if eos else [])


def test_target_weights_follow_each_kind_of_target():
    ids, weights = seq.target_ids_and_weights(["ab", [("xyz", 3.0), ("q", 0.5)]], _chars)
    assert ids == [[97, 98], [120, 121, 122, 113]]
    # A plain string: mean NLL (1/len each); a list of segments: w times the mean of each segment's NLL.
    assert weights == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0, 0.5])
    target = TokenWeightedTarget((("ab", 2.0), (" c", 1.0)), eos=True)
    ids, weights = seq.target_ids_and_weights([target], _chars)
    # Tokenised whole: "ab c" -> a, b, " c", eos; the first segment ends after len(_chars("ab")) = 2 tokens.
    assert ids == [[97, 98, 1000 + ord("c"), 2]]
    assert weights == pytest.approx([2.0 / 4, 2.0 / 4, 1.0 / 4, 1.0 / 4])  # w over the target's total tokens


def test_joint_segments_cut_where_the_prefix_alone_ends():
    """Fu et al.'s two-way tokenisation: the whole text once, split at the token count of the prefix."""
    target = TokenWeightedTarget((("a", 1.0), (" b", 1.0), (" c", 1.0)))
    assert seq._joint_segments(target, _chars) == [[97], [1000 + ord("b")], [1000 + ord("c")]]
    # A prefix that tokenises longer than the whole: the cut is capped at the whole's length.
    odd = TokenWeightedTarget((("a ", 1.0), ("b", 1.0)))
    assert seq._joint_segments(odd, _chars) == [[97, 1000 + ord("b")], []]
    assert seq.target_ids_and_weights([TokenWeightedTarget((("", 1.0),))], _chars) == ([[]], [])


def test_token_cache_tokenises_each_missing_key_once_and_clears_past_its_limit():
    calls = []

    def tokenize_many(keys):
        calls.append(list(keys))
        return [[len(k)] for k in keys]

    cache = TokenCache(limit=3)
    assert cache.get_many(["a", "bb", "a"], tokenize_many) == [[1], [2], [1]]
    assert calls == [["a", "bb"]]
    assert cache.get_many(["bb", "ccc"], tokenize_many) == [[2], [3]] and calls[-1] == ["ccc"]
    assert cache.get("a", lambda: [99]) == [1] and len(calls) == 2  # a hit asks nothing
    cache.get_many(["dddd"], tokenize_many)  # 3 entries + 1 > limit: cleared first
    assert set(cache.entries) == {"dddd"}
    assert cache.get("x", lambda: [7]) == [7] and set(cache.entries) == {"dddd", "x"}
    assert TokenCache().limit == 100_000


def test_repeat_rows_repeats_each_row_in_place():
    inputs = {"pixel_values": torch.tensor([[1.0], [2.0]]), "ids": torch.tensor([[3], [4]])}
    assert seq.repeat_rows(inputs, 1) is inputs
    out = seq.repeat_rows(inputs, 3)
    assert out["pixel_values"].flatten().tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert out["ids"].flatten().tolist() == [3, 3, 3, 4, 4, 4]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def _appended(model, prompt: list[int], choice: list[int]) -> float:
    """log p(choice | prompt): the full sequence, unpadded, one forward."""
    ids = torch.tensor([prompt + choice])
    logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
    return sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(choice))


@pytest.fixture(scope="module")
def tiny_opt():
    """Learned absolute positions (BLIP-2's OPT): an error in the position ids shows, which RoPE hides."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(1)
    config = OPTConfig(vocab_size=40, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=0, dropout=0.0)
    return OPTForCausalLM(config).eval()


# Two choices after the lead that need the cache: each must start from the prompts alone.
CHOICES = [[[5], [6]], [[5, 7], [6]], [[5], [6, 8, 9], [10, 11], [12]], [[5, 7, 9, 11], [6, 8], [10, 11, 12], [13]]]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_opt"])
@pytest.mark.parametrize("choices", CHOICES)
def test_cached_choice_logprobs_equal_scoring_each_appended_sequence(request, family, choices):
    model = request.getfixturevalue(family)
    prompts = [[3, 4, 13, 14, 15], [16, 17], [18, 19, 20, 21]]  # different lengths: left padding matters
    with torch.no_grad():
        got = seq.cached_choice_logprobs(model, prompts, choices, pad_id=0, device="cpu")
    expected = torch.tensor([[_appended(model, p, c) for c in choices] for p in prompts], dtype=torch.float64)
    assert got.shape == (3, len(choices)) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


# --- Survivors of the 21:59 UTC `sequences` run (docs/testing.md says which mutant each one kills) ---


def test_an_all_empty_batch_still_gives_integer_ids_masks_and_labels():
    """torch infers int64 from a list of Python ints but float32 from an empty list: the explicit dtype is
    what keeps a batch of empty rows usable as embedding indices and cross-entropy targets."""
    ids, mask = seq.pad_batch([[], []], pad_id=0)
    assert ids.shape == mask.shape == (2, 0) and ids.dtype == mask.dtype == torch.long
    assert torch.nn.functional.embedding(ids, torch.zeros(3, 2)).shape == (2, 0, 2)
    ids, mask, labels = seq.prompt_target_batch([[]], [[]], pad_id=0)
    assert labels.shape == (1, 0) and labels.dtype == torch.long


def test_per_row_keeps_the_dtype_of_its_values():
    """A float64 caller gets float64 sums, exact where float32 would round (1 + 2**-40 is not a float32)."""
    values = torch.tensor([1.0, 2.0**-40, 5.0], dtype=torch.float64)
    rows = torch.tensor([0, 0, 1])
    total = seq.per_row(values, rows, 2, mean=False)
    assert total.dtype == torch.float64 and total.tolist() == [1.0 + 2.0**-40, 5.0]
    mean = seq.per_row(values, rows, 2, mean=True)
    assert mean.dtype == torch.float64 and mean.tolist() == [(1.0 + 2.0**-40) / 2, 5.0]


def test_an_empty_first_segment_gets_no_token():
    """The prefix "" has no token, so the cut is at 0: every token belongs to the second segment and has
    its weight over the target's 2 tokens."""
    target = TokenWeightedTarget((("", 2.0), ("ab", 1.0)))
    assert seq._joint_segments(target, _chars) == [[], [97, 98]]
    assert seq.target_ids_and_weights([target], _chars) == ([[97, 98]], [0.5, 0.5])


def test_a_one_token_weighted_target_carries_its_whole_weight():
    ids, weights = seq.target_ids_and_weights([TokenWeightedTarget((("a", 3.0),))], _chars)
    assert ids == [[97]] and weights == [3.0]  # w times the NLL of its one token, over 1 token


def _forwards(model):
    """Record, for each forward of `model.model`, whether it returned a KV cache."""
    seen = []
    handle = model.model.register_forward_hook(lambda module, args, out: seen.append(out.cache is not None))
    return seen, handle


def test_yes_no_with_one_two_token_choice_cost_one_forward_and_keep_no_cache(tiny_llama):
    """The docstring's promise: the longest choice rides along with the prompts (whatever its position in
    the list), so one two-token choice beside one-token ones costs one forward and builds no cache."""
    seen, handle = _forwards(tiny_llama)
    try:
        with torch.no_grad():
            got = seq.cached_choice_logprobs(tiny_llama, [[3, 4, 5], [6]], [[5, 7], [6]], pad_id=0, device="cpu")
    finally:
        handle.remove()
    assert seen == [False]
    expected = torch.tensor([[_appended(tiny_llama, p, c) for c in [[5, 7], [6]]] for p in [[3, 4, 5], [6]]])
    torch.testing.assert_close(got.double(), expected.double(), atol=1e-4, rtol=1e-4)
    # And token_nll, which nothing decodes after, builds no cache either.
    seen, handle = _forwards(tiny_llama)
    try:
        with torch.no_grad():
            seq.token_nll(tiny_llama, *seq.prompt_target_batch([[3, 4]], [[5, 6]], pad_id=0))
    finally:
        handle.remove()
    assert seen == [False]


class _RunningMeanCache:
    """A KV cache stand-in for `_CachedTinyLM`: the (masked) inputs seen so far; `crop(-k)` drops the last k."""

    def __init__(self, x, m):
        self.x, self.m = x, m

    def crop(self, k):
        self.x, self.m = self.x[:, :k], self.m[:, :k]


class _CachedTinyLM(torch.nn.Module):
    """`TinyLM` with position embeddings and a cache, so that it runs on the meta device (transformers'
    mask code reads tensor values, which meta tensors have none of)."""

    def __init__(self, vocab=20, dim=6):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.positions = torch.nn.Embedding(32, dim)
        self.lm_head = torch.nn.Linear(dim, vocab)
        outer = self

        class Body(torch.nn.Module):
            def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None, **_):
                width = input_ids.shape[1]
                m = attention_mask[:, -width:]
                x = (outer.embed(input_ids) + outer.positions(position_ids)) * m[..., None]
                if cache is not None:
                    x, m = torch.cat([cache.x, x], dim=1), torch.cat([cache.m, m], dim=1)
                    cache.x, cache.m = x, m
                elif use_cache:
                    cache = _RunningMeanCache(x, m)
                hidden = x.cumsum(1) / m.cumsum(1).clamp_min(1)[..., None]
                return type("Out", (), {"last_hidden_state": hidden[:, -width:], "cache": cache})()

        self.model = Body()


class _OneDevice(torch.overrides.TorchFunctionMode):
    """CUDA's rule on any machine: an operation's tensors (0-dim ones aside) must share one device.
    Indexing is left out, since CUDA tensors accept CPU indices there."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors if t.dim() > 0}
        if func is not torch.Tensor.__getitem__ and len(devices) > 1:
            raise AssertionError(f"{getattr(func, '__name__', func)} mixes devices {sorted(map(str, devices))}")
        return func(*args, **kwargs)


def test_the_cached_stand_in_scores_like_appended_sequences():
    """The stand-in's cache is right (else the device test below would prove little)."""
    torch.manual_seed(0)
    model = _CachedTinyLM().eval()
    prompts, choices = [[3, 4, 13, 14], [16, 17]], CHOICES[3]

    def appended(prompt, choice):
        ids = torch.tensor([prompt + choice])
        out = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1])[None])
        logp = model.lm_head(out.last_hidden_state)[0].double().log_softmax(-1)
        return sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(choice))

    with torch.no_grad():
        got = seq.cached_choice_logprobs(model, prompts, choices, pad_id=0, device="cpu")
        expected = torch.tensor([[appended(p, c) for c in choices] for p in prompts], dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_every_tensor_is_made_on_the_device_asked():
    """On the meta device (no GPU needed), under CUDA's one-device rule: ids, masks, carried tokens,
    positions, choice tokens and per-row sums are all built on the model's device. (`combine_variants`
    cannot run on meta: its boolean mask needs values; its owners are an index, which CUDA takes from
    the CPU.)"""
    model = _CachedTinyLM().to("meta").eval()
    with torch.no_grad(), _OneDevice():
        scores = seq.cached_choice_logprobs(model, [[3, 4, 13, 14], [16, 17]], CHOICES[3], pad_id=0, device="meta")
        summed = seq.per_row(torch.ones(3, device="meta"), torch.tensor([0, 1, 1], device="meta"), 2, mean=False)
        mean = seq.per_row(torch.ones(3, device="meta"), torch.tensor([0, 1, 1], device="meta"), 2, mean=True)
    assert scores.shape == (2, 4) and summed.shape == mean.shape == (2,)
    assert {t.device.type for t in (scores, summed, mean)} == {"meta"}
