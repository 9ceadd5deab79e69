"""The answer parser handles what models really say."""

from __future__ import annotations

import pytest

from goat_bench.parsing import parse_answer

CASES = [
    ("Yes", 1, "yes"), ("No", 0, "no"), ("Yes.", 1, "yes"), ("no.", 0, "no"), ("YES", 1, "yes"),
    ("**No**", 0, "no"), ("**Yes**, the meme is hateful.", 1, "yes"), ("`No`", 0, "no"),
    ("No, this meme is not hateful.", 0, "no"), ("Yes, it mocks a religious group.", 1, "yes"),
    (" \n  Yes", 1, "yes"), ("'No'", 0, "no"), ("\"Yes\"", 1, "yes"), ("Nope.", 0, "no"), ("yeah", 1, "yes"),
    ("Answer: Yes", 1, "yes"), ("Answer: no", 0, "no"), ("The answer is no.", 0, "no"),
    ("The meme jokes about X. Considering the text and the image... Answer: Yes", 1, "yes"),
    ("Let me think. It could be seen as yes or no, but the final answer: No", 0, "no"),
    ("I'm sorry, but I can't help with that.", None, "refusal"),
    ("As an AI language model, I cannot make judgements about memes.", None, "refusal"),
    ("I cannot determine that from the image.", None, "refusal"),
    ("", None, "empty"), ("   ", None, "empty"), (None, None, "empty"),
    ("This meme is not hateful.", 0, "no"), ("The meme is clearly hateful towards immigrants.", 1, "yes"),
    ("It isn't hateful", 0, "no"),
    ("Hmm, difficult. Maybe yes, maybe no.", None, "ambiguous"),
    ("The image shows a cat on a sofa.", None, "unrecognised"),
    ("Not sure, but I'd lean towards yes", 1, "yes"),
]


@pytest.mark.parametrize("text,label,reason", CASES)
def test_parse(text, label, reason):
    parsed = parse_answer(text, "hateful")
    assert (parsed.label, parsed.reason) == (label, reason)


def test_no_does_not_match_inside_words():
    assert parse_answer("Nothing in this meme targets anyone, so no.", "hateful").label == 0
    assert parse_answer("Notably offensive content: yes", "offensive").label == 1
