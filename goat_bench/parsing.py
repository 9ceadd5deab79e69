"""Turn a model's free-text answer into a label: 1 (Yes), 0 (No) or invalid.

Rules, in order (after stripping markdown such as ** and `, quotes and leading spaces):
1. empty -> invalid ("empty");
2. an explicit verdict anywhere: "Answer: Yes", "the answer is no" -> that verdict (the last one wins,
   as chain-of-thought ends with it);
3. the first word is yes/no (any case and punctuation: "Yes.", "NO,", "yes - it is") -> that word;
4. a refusal ("I'm sorry", "I cannot", "As an AI") -> invalid ("refusal");
5. "is not <adjective>" / "isn't <adjective>" -> 0; "is <adjective>" -> 1 (when the adjective is known);
6. exactly one of the words yes / no appears -> it; otherwise invalid ("ambiguous" or "unrecognised").
Invalid answers count as wrong in every metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Parsed:
    label: int | None
    reason: str  # yes | no | empty | refusal | ambiguous | unrecognised


_MARKUP = re.compile(r"[*_`#>\"“”]")
_VERDICT = re.compile(r"\b(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*(yes|no)\b|\bthe answer is\s+(yes|no)\b")
_FIRST_WORD = re.compile(r"^\W*(yes|no|yeah|yep|nope)\b")
_REFUSAL = re.compile(r"\b(i'?m sorry|i am sorry|i cannot|i can ?not|i can't|i won't|as an ai|unable to (?:help|assist|determine|answer)|i do not feel comfortable|not able to)\b")
_WORDS = re.compile(r"\b(yes|no)\b")


def parse_answer(text: str | None, adjective: str | None = None) -> Parsed:
    raw = (text or "").lower().replace("’", "'").replace("‘", "'")
    # Drop markdown and double quotes; single quotes only where they wrap words ('No'),
    # so that "isn't" keeps its apostrophe.
    clean = re.sub(r"(^|\s)'|'(\s|$|[.,!?])", r"\1\2", _MARKUP.sub("", raw)).strip()
    if not clean:
        return Parsed(None, "empty")
    verdicts = [a or b for a, b in _VERDICT.findall(clean)]
    if verdicts:
        return _verdict(verdicts[-1])
    first = _FIRST_WORD.match(clean)
    if first:
        return _verdict(first.group(1))
    if _REFUSAL.search(raw):
        return Parsed(None, "refusal")
    if adjective:
        adj = re.escape(adjective.lower())
        if re.search(rf"\b(?:is not|isn't|not|is in no way)\s+(?:\w+\s+)?{adj}\b", clean):
            return Parsed(0, "no")
        if re.search(rf"\b(?:is|seems|appears)\s+(?:\w+\s+)?{adj}\b", clean):
            return Parsed(1, "yes")
    words = set(_WORDS.findall(clean))
    if len(words) == 1:
        return _verdict(words.pop())
    return Parsed(None, "ambiguous" if words else "unrecognised")


def _verdict(word: str) -> Parsed:
    return Parsed(1, "yes") if word in ("yes", "yeah", "yep") else Parsed(0, "no")
