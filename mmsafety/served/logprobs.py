"""Fixed choices scored from a served model's first answer token.

A server returns, for each generated token, the `top_logprobs` most likely tokens (at most 20).
A choice's log-probability is that of its first word as the answer's first word:
- every spelling counts as one answer ("Yes", " Yes", "yes", "YES", "▁Yes", "ĠYes"), summed;
- some tokenizers emit a space token before the word ("No" as " " + "No"): the greedy path's
  leading whitespace tokens are kept, and the word found after them counts with the path's
  log-probability added. So log p(choice) = logsumexp over positions i up to the first
  non-whitespace token of [sum of the chosen logprobs before i + logprob of a spelling at i].
The greedy path is all a server shows: the answer it chose gets its full log-probability, while
the other answer is seen only through the top-k of that path (a lower bound when it would have
needed a different first token, e.g. " " + "No" when the path took " Yes"). The verdict (which
is larger) is therefore the local model's. A choice absent from every kept top-k is missing (-inf): all that is known is that it is less
likely than the k-th token, so when one of Yes/No is missing the other, present, one wins; the
record says which was missing and counts such samples.

Only the first word is compared, so choices must differ in their first word (Yes/No do).
"""

from __future__ import annotations

import math

# Markers tokenizers put before a word: SentencePiece's ▁, byte-level BPE's Ġ.
_WORD_MARKERS = "▁Ġ"


def spelling(token: str) -> str:
    return token.strip().lstrip(_WORD_MARKERS).strip().casefold()


def first_word(choice: str) -> str:
    words = choice.split()
    return spelling(words[0]) if words else ""


def _logsumexp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def choice_logprobs_from_tokens(tokens: list[dict], choices: list[str]) -> list[float]:
    """`tokens`: the response's leading tokens, [{token, logprob, top: [{token, logprob}]}], up to
    and including the first non-whitespace one. Returns log p(first word of each choice), -inf where
    no spelling of it is in any kept top-k."""
    out = []
    for choice in choices:
        want, found, prefix = first_word(choice), [], 0.0
        for position in tokens:
            top = position.get("top") or [{"token": position.get("token"), "logprob": position.get("logprob")}]
            found += [prefix + t["logprob"] for t in top if t.get("token") is not None
                      and t.get("logprob") is not None and spelling(t["token"]) == want]
            prefix += position.get("logprob") or 0.0
        out.append(_logsumexp(found) if found else -math.inf)
    return out
