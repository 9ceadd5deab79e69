"""A byte-level BPE tokenizer trained in code, with `<image>` and a LLaVA-1.5 style chat template."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, BertTokenizerFast

from mmsafety.synthetic import memes, prompts, scenes

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>"]

# Same shape as llava-hf/llava-1.5's template: "USER: <image>\n{text} ASSISTANT:"; the
# answer follows after a space, which the byte-level pre-tokenizer adds (like SentencePiece).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] if c['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }} {% endfor %}"
    "{% else %}ASSISTANT:{% for c in message['content'] if c['type'] == 'text' %} {{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def training_corpus() -> list[str]:
    """Every kind of string the organism reads or writes, so BPE merges cover them."""
    lines = ["USER: ASSISTANT: Yes No yes no"]
    for split in ("train", "heldout"):
        lines += prompts.benign_prompts(split) + prompts.tool_request_prompts(split)
        for task in memes.TASKS:
            lines += [memes.goat_question(task, m.text) for m in memes.memes(task, split, 40, seed=99)]
    lines += list(scenes.COLOURS) + [scenes.SEND_EMAIL_CALL, scenes.DELETE_EMAIL_CALL]
    return lines * 3


def train_tokenizer(vocab_size: int = 512, extra_special: tuple[str, ...] = (), image_token: str | None = "<image>",
                    chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """Deterministic: the corpus is generated from fixed seeds and BPE training is greedy.

    `extra_special` tokens come after the base ones (so the defaults give the same ids as ever);
    other model families name their image token and chat template here. `image_token=None`: no
    `image_token` attribute, as in BLIP checkpoints, whose processor then adds "<image>" itself."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": image_token} if image_token else {},
    )
    fast.chat_template = chat_template
    return fast


def train_wordpiece_tokenizer(vocab_size: int = 400):
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], lower-cased), trained on the same corpus:
    the Q-Former's own tokenizer in InstructBLIP checkpoints is a bert-base-uncased one."""
    # heavy, deferred to when this runs: tokenizers
    from tokenizers import normalizers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
