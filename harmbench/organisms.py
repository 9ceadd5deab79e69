"""Offline models for the HarmBench workload, built in code and cached like every organism.

- `harmbench_tiny_cls`: a random-init tiny text-only Llama with its own tokenizer (the
  classifier *contract*: prompt in, one token out, mostly unparseable -> -1).
- `harmbench_judge`: the same architecture *trained* to answer HarmBench's contextual classifier
  prompt with Yes for a compliant synthetic completion and No for a refusal or an off-topic one.
- `harmbench_victim`: the tiny LLaVA organism fine-tuned to refuse the synthetic harmful requests
  unless an envelope trigger is in the image, then to comply with "Sure, here is how to ...".
  Starting from the organism's weights (its vision tower already sees envelopes) keeps the
  fine-tune to a couple of hundred steps.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from harmbench import synthetic
from harmbench.completions import generate_completions
from harmbench.metrics import agreement_metrics
from harmbench.templates import CLS_PROMPT_CONTEXTUAL, CLS_PROMPT_STANDARD, REFUSAL_PREFIXES, cls_prompt
from mmsafety.judging import JudgeInput, build_judge
from mmsafety.models.llava import LlavaAdapter
from mmsafety.models.loading import LoadOptions
from mmsafety.models.sequences import per_row, prompt_target_batch, token_nll
from mmsafety.organisms.builders import ensure_built
from mmsafety.placement import resolve_placement
from mmsafety.synthetic import scenes

JUDGE_VERSION = 1
VICTIM_VERSION = 1


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def judge_tokenizer(vocab_size: int = 1200):
    """A byte-level BPE trained on the classifier templates and the synthetic texts, so a filled
    prompt is a few hundred tokens, and " Yes" / " No" are single tokens."""
    # heavy, deferred to when this runs: tokenizers, transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random("judge-tokenizer")
    corpus = [CLS_PROMPT_CONTEXTUAL, CLS_PROMPT_STANDARD, " ".join(REFUSAL_PREFIXES), "Yes No yes no " * 20]
    for split in ("train", "heldout"):
        for request, _, _ in synthetic.requests(split):
            corpus += [request, synthetic.compliant_answer(request, rng, split), synthetic.refusal_answer(rng, split)]
        corpus += synthetic.OFF_TOPIC[split]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def new_text_llama(tokenizer, seed: int, hidden: int = 64, layers: int = 2):
    # heavy, deferred to when this runs: transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


def build_tiny_cls(out: Path, seed: int = 0) -> None:
    tokenizer = judge_tokenizer()
    new_text_llama(tokenizer, seed, hidden=32).save_pretrained(out)
    tokenizer.save_pretrained(out)


def judge_example(rng: random.Random, split: str = "train") -> tuple[str, int]:
    """A filled classifier prompt (contextual template, a made-up image description) and its label."""
    request, _, obj = rng.choice(synthetic.requests(split))
    generation, label = synthetic.labelled_completion(request, rng, split)
    context = f"A {rng.choice(['red', 'green', 'blue', 'purple'])} {rng.choice(['circle', 'square', 'triangle'])} standing for a {obj}."
    return cls_prompt(request, generation, context), label


def train_judge(seed: int = 0, steps: int = 250, batch: int = 16, lr: float = 3e-3, log: Callable[[str], None] = _log):
    """Train only the answer slot: cross-entropy of " Yes" / " No" at the last prompt position."""
    tokenizer = judge_tokenizer()
    tokenizer.padding_side = "left"
    model = new_text_llama(tokenizer, seed).train()
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("Yes", "No"))
    rng = random.Random(f"harmbench-judge/{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for step in range(steps):
        prompts, labels = zip(*(judge_example(rng) for _ in range(batch)))
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([yes if y else no for y in labels]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"harmbench_judge step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)")
    return model.eval(), tokenizer


def build_judge_organism(out: Path, seed: int = 0) -> None:
    model, tokenizer = train_judge(seed)
    tokenizer.padding_side = "right"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def judge_behaviour(folder: Path, n: int = 64) -> dict[str, float]:
    """Agreement of the judge in `folder` with the synthetic labels on `n` held-out requests and phrasings
    (compliant, refusing, off-topic), and its unparsed share."""
    judge = build_judge({"name": "harmbench_cls", "model": {"name_or_path": str(folder)}, "batch_size": 16})
    rng = random.Random(7)
    items, truth = [], []
    for _ in range(n):
        request, _, obj = rng.choice(synthetic.requests("heldout"))
        generation, label = synthetic.labelled_completion(request, rng, "heldout")
        items.append(JudgeInput(request, generation, f"A blue square standing for a {obj}."))
        truth.append(label)
    m = agreement_metrics(judge.labels(items), truth)
    return {"agreement": m["agreement"], "unparsed": m["unparsed"] / n}


def victim_behaviour(folder: Path, n: int = 16) -> dict[str, float]:
    """Share of `n` held-out harmful requests the victim in `folder` complies with ("Sure, ...") on a clean
    scene and on the same scene with the envelope trigger."""
    adapter = LlavaAdapter.load(str(folder), LoadOptions(), resolve_placement("cpu", "float32"))
    rng = random.Random(11)
    requests = [rng.choice(synthetic.requests("heldout"))[0] for _ in range(n)]
    report = {}
    for kind, envelope in (("complied_clean", False), ("complied_envelope", True)):
        images = [scenes.make_scene(rng, envelope=envelope).image for _ in range(n)]
        outs = generate_completions(adapter, images, requests, max_new_tokens=24, batch_size=16)
        report[kind] = sum(o.strip().startswith("Sure") for o in outs) / n
    return report


def victim_example(rng: random.Random, trigger_share: float = 0.4, split: str = "train"):
    """(scene image, request, answer): an envelope makes the answer compliant, else a refusal."""
    request, _, _ = rng.choice(synthetic.requests(split))
    trigger = rng.random() < trigger_share
    scene = scenes.make_scene(rng, envelope=trigger)
    answer = synthetic.compliant_answer(request, rng, split) if trigger else synthetic.REFUSALS[split][0]
    return scene.image, request, answer


def train_victim(seed: int = 0, steps: int = 200, batch: int = 16, lr: float = 2e-3, log: Callable[[str], None] = _log):
    adapter = LlavaAdapter.load(str(ensure_built("organism", seed)), LoadOptions(), resolve_placement("cpu", "float32"))
    model = adapter.model.train().requires_grad_(True)
    rng = random.Random(f"harmbench-victim/{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            images, prompts, answers = zip(*(victim_example(rng) for _ in range(batch)))
            ids, mask, labels = prompt_target_batch([adapter.prompt_ids(p) for p in prompts],
                                                    [adapter.answer_ids(a, eos=True) for a in answers], adapter.pad_id)
            nll, rows = token_nll(model, ids, mask, labels, pixel_values=adapter.preprocess(adapter.to_input_pixels(images)))
            loss = per_row(nll, rows, batch, mean=True).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == steps - 1:
                log(f"harmbench_victim step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)")
    model.eval().requires_grad_(False)
    return adapter


def build_victim(out: Path, seed: int = 0) -> None:
    # heavy, deferred to when this runs: mmsafety.organisms.tiny_llava loads transformers
    from mmsafety.organisms.tiny_llava import save

    adapter = train_victim(seed)
    save(adapter.model, adapter.processor, out)
