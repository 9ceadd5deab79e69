"""Token batches shared by the language-model adapters: padding, prompt+target labels,
per-token NLL on labelled positions only, per-row sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

IGNORE = -100


def pad_batch(seqs: Sequence[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (input_ids, attention_mask) [N, T], padded on `side`.

    Padded in Python and converted in one call each: attacks build a batch every step, and
    a tensor per row cost ~1% of a step on the organism."""
    width = max(len(s) for s in seqs)
    pads = [[pad_id] * (width - len(s)) for s in seqs]
    ones = [[1] * len(s) for s in seqs]
    zeros = [[0] * len(p) for p in pads]
    if side == "right":
        ids, mask = [s + p for s, p in zip(seqs, pads)], [o + z for o, z in zip(ones, zeros)]
    else:
        ids, mask = [p + s for s, p in zip(seqs, pads)], [z + o for o, z in zip(ones, zeros)]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def prompt_target_batch(prompt_ids: Sequence[list[int]], target_ids: Sequence[list[int]], pad_id: int):
    """Right-padded prompt+target sequences with labels only on the target tokens."""
    seqs = [p + t for p, t in zip(prompt_ids, target_ids)]
    ids, mask = pad_batch(seqs, pad_id)
    width = ids.shape[1]
    labels = [[IGNORE] * len(p) + t + [IGNORE] * (width - len(p) - len(t)) for p, t in zip(prompt_ids, target_ids)]
    return ids, mask, torch.tensor(labels, dtype=torch.long)


def token_nll(model, input_ids, attention_mask, labels, **vision) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL (fp32) of every labelled token and the row it belongs to. `vision`: the family's image
    inputs (pixel_values, and image_grid_thw for Qwen2-VL), or `inputs_embeds` for a family that
    fills its image placeholders itself (BLIP), which then stand in for `input_ids`.

    The LM head runs only on the positions that predict a label: for a 32k vocabulary
    and ~600-token prompts this avoids materialising [N, T, V] logits.
    """
    inputs = vision if "inputs_embeds" in vision else {"input_ids": input_ids, **vision}
    # No KV cache: nothing decodes after this forward (and a checkpointed layer would drop it).
    hidden = model.model(attention_mask=attention_mask, **inputs, use_cache=False).last_hidden_state
    predicts = labels[:, 1:] != IGNORE
    rows = predicts.nonzero()[:, 0]
    logits = model.lm_head(hidden[:, :-1][predicts]).float()
    return F.cross_entropy(logits, labels[:, 1:][predicts], reduction="none"), rows


def cached_choice_logprobs(model, prompt_ids: Sequence[list[int]], choice_ids: Sequence[list[int]], pad_id: int,
                           device, **vision) -> torch.Tensor:
    """log p(choice | prompt) [N, C] (fp32) for a decoder model with `.model` and `.lm_head`: the
    prompts run once, and each choice then costs at most a forward of its own few tokens from the
    prompts' KV cache. Equal to scoring every choice appended to every prompt, at about
    1/len(choices) of the compute when prompts are long and choices short.

    The longest choice's continuation rides along with the prompt forward (its tokens are
    appended, then cropped from the cache), so "Yes"/"No" with one two-token choice cost one
    forward per batch and keep no cache (keeping one costs about a fifth of a small model's
    forward). `vision`: the family's image inputs, one entry per prompt along dim 0."""
    n = len(prompt_ids)
    # Left padding: every prompt ends at the last column, so the continuations line up.
    ids, mask = pad_batch(prompt_ids, pad_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    lead = max(range(len(choice_ids)), key=lambda k: len(choice_ids[k]))
    carried = torch.tensor(choice_ids[lead][:-1], device=device, dtype=ids.dtype).expand(n, -1)
    ids, mask = torch.cat([ids, carried], dim=1), torch.cat([mask, mask.new_ones(carried.shape)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    need_cache = any(len(tokens) > 1 for k, tokens in enumerate(choice_ids) if k != lead)
    out = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, **vision, use_cache=need_cache)
    cache = out.cache  # transformers 5's name (`past_key_values` is deprecated and warns on every eval)
    # Log-probabilities after the prompt's last token, then after each carried token.
    logp = model.lm_head(out.last_hidden_state[:, -1 - carried.shape[1]:]).float().log_softmax(-1)
    first = logp[:, 0]
    if carried.shape[1]:
        if need_cache:
            cache.crop(-carried.shape[1])  # back to the prompts alone
        mask, positions = mask[:, :-carried.shape[1]], positions[:, :-carried.shape[1]]
    last_position = positions[:, -1:]
    scores = []
    for k, tokens in enumerate(choice_ids):
        score = first[:, tokens[0]]
        if k == lead and len(tokens) > 1:
            rest = torch.tensor(tokens[1:], device=device).expand(n, -1)
            score = score + logp[:, 1:].gather(-1, rest[..., None]).squeeze(-1).sum(-1)
        elif len(tokens) > 1:
            rest = torch.tensor(tokens, device=device).expand(n, -1)
            step = len(tokens) - 1
            hidden = model.model(
                input_ids=rest[:, :-1], cache=cache, use_cache=True,
                attention_mask=torch.cat([mask, mask.new_ones(n, step)], dim=1),
                position_ids=last_position + torch.arange(1, step + 1, device=device),
            ).last_hidden_state
            later = model.lm_head(hidden).float().log_softmax(-1)
            score = score + later.gather(-1, rest[:, 1:, None]).squeeze(-1).sum(-1)
            cache.crop(-step)  # drop this choice's tokens: back to the prompts alone
        scores.append(score)
    return torch.stack(scores, dim=1)


def spelling_variants(choice: str, answer_ids) -> list[list[int]]:
    """The token sequences a model can start its answer with to say `choice`: as written ("Yes") and
    after a space (" Yes"). Which one is natural depends on the tokenizer and template: byte-level BPE
    after "Assistant:" (Idefics3/SmolVLM) or a bare prompt (BLIP-2-OPT) writes " Yes" as one token
    (ĠYes), while a SentencePiece tokenizer already adds its dummy prefix to "Yes". Rather than decide
    per tokenizer, the score is the log-sum-exp over both spellings. Distinct sequences only, and none
    that extends another (those events would overlap): the events summed are then disjoint."""
    variants = []
    for ids in sorted((answer_ids(choice), answer_ids(" " + choice.lstrip())), key=len):
        if ids and not any(ids[:len(v)] == v for v in variants):
            variants.append(ids)
    return variants


def choice_variants(choices: Sequence[str], answer_ids) -> tuple[list[list[int]], list[int]]:
    """Every choice's spelling variants, flat, and the choice each belongs to."""
    flat, owners = [], []
    for k, choice in enumerate(choices):
        for ids in spelling_variants(choice, answer_ids):
            flat.append(ids)
            owners.append(k)
    return flat, owners


def combine_variants(scores: torch.Tensor, owners: Sequence[int], n_choices: int) -> torch.Tensor:
    """log p per choice [N, C] from log p per variant [N, V]: log-sum-exp over each choice's variants."""
    owner = torch.tensor(owners, device=scores.device)
    return torch.stack([scores[:, owner == k].logsumexp(dim=1) for k in range(n_choices)], dim=1)


def per_row(values: torch.Tensor, rows: torch.Tensor, n: int, mean: bool) -> torch.Tensor:
    total = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    if not mean:
        return total
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, torch.ones_like(values))
    return total / count.clamp_min(1)




@dataclass(frozen=True)
class TokenWeightedTarget:
    """Segments [(text, weight), ...] scored as sum over tokens of weight * NLL, divided by the total
    token count: Fu et al.'s token-count-weighted mean (lambda on the answer, 1 on the tool call).
    `eos`: the tokenizer's end-of-sequence token ends the last segment (and counts in it). The text is
    tokenised as a whole (see `_joint_segments`)."""
    segments: tuple[tuple[str, float], ...]
    eos: bool = False


def _joint_segments(target: TokenWeightedTarget, answer_ids) -> list[list[int]]:
    """The concatenated text tokenised once (as the model reads it), split after as many tokens as the
    text up to each segment's end has on its own: Fu et al.'s `twoway_tokenize_prompt_target` (the
    boundary is the token count of prompt + first segment). Tokenising each segment on its own
    would insert tokens the model never produces there (a prefix space before "\n", for example)."""
    texts = [text for text, _ in target.segments]
    full = answer_ids("".join(texts), eos=target.eos)
    cuts, end = [], 0
    for k in range(1, len(texts)):
        end = max(end, min(len(full), len(answer_ids("".join(texts[:k])))))  # their boundary: the prefix's token count
        cuts.append(end)
    bounds = [0] + cuts + [len(full)]
    return [full[a:b] for a, b in zip(bounds, bounds[1:])]


def target_ids_and_weights(targets, answer_ids) -> tuple[list[list[int]], list[float]]:
    """Token ids per target, and one weight per token: a segment (text, w) contributes w times
    the mean NLL of its tokens; a plain string is one segment of weight 1; a TokenWeightedTarget
    contributes w times each of its tokens' NLL over the target's total token count."""
    target_ids, weights = [], []
    for target in targets:
        if isinstance(target, TokenWeightedTarget):
            ids_per_segment = _joint_segments(target, answer_ids)
            total = max(1, sum(len(ids) for ids in ids_per_segment))
            per_token = [w / total for _, w in target.segments]
        else:
            segments = [(target, 1.0)] if isinstance(target, str) else target
            ids_per_segment = [answer_ids(text) for text, _ in segments]
            per_token = [w / max(1, len(ids)) for (_, w), ids in zip(segments, ids_per_segment)]
        target_ids.append([i for ids in ids_per_segment for i in ids])
        weights += [w for w, ids in zip(per_token, ids_per_segment) for _ in ids]
    return target_ids, weights


class TokenCache:
    """Bounded memo of tokenisations: attacks ask for the same prompts and targets every step,
    while a long GOAT run sees each prompt once (hence the bound: cleared past `limit` entries)."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self.entries: dict = {}

    def get(self, key, tokenize) -> list[int]:
        return self.get_many([key], lambda _: [tokenize()])[0]

    def get_many(self, keys, tokenize_many) -> list[list[int]]:
        """Like `get` for a batch: the missing keys go to `tokenize_many` in one call (a fast
        tokenizer encodes a list in one Rust call, about half the time of one call per text)."""
        missing = [key for key in dict.fromkeys(keys) if key not in self.entries]
        if missing:
            if len(self.entries) + len(missing) > self.limit:
                self.entries.clear()
            self.entries.update(zip(missing, tokenize_many(missing)))
        return [self.entries[key] for key in keys]


def repeat_rows(inputs: dict[str, torch.Tensor], repeat: int) -> dict[str, torch.Tensor]:
    """Each row of every input `repeat` times in a row (one image's inputs for several targets)."""
    return inputs if repeat == 1 else {key: value.repeat_interleave(repeat, dim=0) for key, value in inputs.items()}
