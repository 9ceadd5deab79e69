"""The parts of bench/gpu_check.py, each run in its own process: `run(part, plan, ...)` builds the
random-init model of the plan's size and writes the part's result (rows so far) to a JSON file
after every row, so a part killed at its cap still reports what it finished.

On a GPU the model is bf16 on cuda:0 (attack math stays fp32, as in every attack); on the CPU it
is fp32 (`--size small`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench._common import timed_alternating
from bench.attack_step import bare_steps, our_steps
from bench.gpu_real_size import random_llava
from mmsafety.models.llava import LlavaAdapter
from mmsafety.placement import resolve_placement
from mmsafety.synthetic import prompts as prompt_sets
from mmsafety.synthetic import scenes
from visual_attacks.targets import ToolTarget

GIB = 2**30
TARGET = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)
CUDA = torch.cuda.is_available()
DEVICE, DTYPE = ("cuda:0", torch.bfloat16) if CUDA else ("cpu", torch.float32)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


class Result:
    """The part's JSON, rewritten whole after every change (a killed part keeps its finished rows)."""

    def __init__(self, path: Path, **fields):
        self.path, self.data = path, dict(fields)

    def set(self, **fields) -> None:
        self.data.update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def add_row(self, row: dict) -> None:
        self.set(rows=[*self.data.get("rows", []), row])


def model(plan, dtype=DTYPE, device=DEVICE):
    """The plan's random-init LLaVA-1.5 (seeded: the same weights in every part)."""
    torch.manual_seed(0)  # _from_config initialises from the global generator; this is its own process
    return random_llava(plan.model, device, dtype)


def adapter(model_and_processor, checkpointing=False, compile=False, dtype=DTYPE, device=DEVICE) -> LlavaAdapter:
    model, processor = model_and_processor
    placement = resolve_placement(device, str(dtype).removeprefix("torch."), None, checkpointing, compile)
    return LlavaAdapter(model, processor, placement, "llava-1.5-7b-shaped-random", "random-init")


def clean_image(a: LlavaAdapter) -> torch.Tensor:
    """The attack's starting image on the model's device, as visual_attacks.craft hands it to pgd."""
    return a.to_input_pixels([s.image for s in scenes.scenes(0, 1)]).to(a.device)


def batch_prompts(b: int) -> list[str]:
    return prompt_sets.benign_prompts("train")[:b]


def stored_memory_estimate(plan) -> dict | None:
    """The last llava-1.5-7b estimate of bench/memory_real_size.py (bench/results), or None (and
    None for another size: it would not apply)."""
    if plan.model != "llava-1.5-7b":
        return None
    path = Path(__file__).resolve().parent / "results" / "memory_real_size.jsonl"
    if not path.exists():
        return None
    row = json.loads(path.read_text().strip().splitlines()[-1])
    return {"time": row["time"], "weights_gib": row["weights_gib"], "fits": row["fits"]}


def predicted_gib(estimate: dict | None, checkpointing: bool, prompts: int) -> float | None:
    """Weights plus activations of one step at `prompts`, from the stored estimate's linear fit."""
    if estimate is None:
        return None
    fit = estimate["fits"][str(checkpointing)]
    return estimate["weights_gib"] + fit["fixed_gib"] + fit["per_prompt_gib"] * prompts


# -- PGD ----------------------------------------------------------------------------------

def steps_for(one_step_s: float, plan) -> int:
    """Steps per timed call so that warm-up plus the alternating repeats take about plan.row_s."""
    calls = (plan.repeats + 1) * 3  # bare k, ours k + 1, ours 1; each repeat and the warm-up
    return max(2, min(20, round(plan.row_s / (calls * max(one_step_s, 1e-4)))))


def pgd_row(a: LlavaAdapter, plan, b: int, mode: str, flops_by_prompts: dict) -> dict:
    """One PGD step's time with `b` prompts (and ~660 tokens each at 336 px), against a bare forward
    + backward of the same batch. Our loop scores its last iterate once more at the end (a
    forward), so its per-step time is the difference between k + 1 steps and 1 step, divided by k:
    what each of an attack's hundreds of steps costs."""
    clean, prompts = clean_image(a), batch_prompts(b)
    tokens = [len(a.prompt_ids(p)) + len(a.answer_ids(TARGET.render(p))) for p in prompts]
    one = our_steps(a, TARGET, prompts, clean, 1)
    one(), sync()  # first call: allocations (and the compile)
    start = time.perf_counter()
    one(), sync()
    k = steps_for(time.perf_counter() - start, plan)
    ours, bare = our_steps(a, TARGET, prompts, clean, k + 1), bare_steps(a, TARGET, prompts, clean, k)
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    t_bare, t_ours, t_one = timed_alternating(lambda: (bare(), sync()), lambda: (ours(), sync()),
                                              lambda: (one(), sync()), repeats=plan.repeats)
    peak = (torch.cuda.max_memory_allocated() - before) / GIB if CUDA else None
    step_s, bare_s = (t_ours - t_one) / k, t_bare / k
    if mode == "compile":  # the counter does not see inside compiled graphs: the eager count of the same batch
        flops, counted_in = flops_by_prompts.get(b), "eager"
    else:  # one bare forward + backward: the same math as one of our steps
        with FlopCounterMode(display=False) as counter:
            bare_steps(a, TARGET, prompts, clean, 1)()
        flops, counted_in = counter.get_total_flops(), mode
        if mode == "eager":
            flops_by_prompts[b] = flops
    return {"mode": mode, "prompts": b, "tokens_per_prompt": sum(tokens) / len(tokens), "steps_per_call": k,
            "repeats": plan.repeats, "ms_per_step": step_s * 1000, "bare_ms_per_step": bare_s * 1000,
            "attack_vs_bare": step_s / bare_s, "flops_per_step": flops, "flops_counted_in": counted_in,
            "tflops": flops / step_s / 1e12 if flops and step_s > 0 else None, "peak_activation_gib": peak}


def part_pgd(plan, result: Result, machine: dict, deadline: float) -> None:
    rate = (machine.get("matmul") or {}).get("tflops")
    card_gib = machine.get("gpu_memory_gib")
    estimate = stored_memory_estimate(plan) if CUDA else None
    weights = model(plan)
    result.set(model=plan.model, dtype=str(DTYPE).removeprefix("torch."), device=DEVICE,
               parameters=sum(p.numel() for p in weights[0].parameters()), matmul_tflops=rate, rows=[], skipped=[])
    flops_by_prompts: dict[int, int] = {}
    for mode in plan.modes:
        if mode == "compile" and deadline - time.time() < plan.compile_min_s:
            result.set(skipped=[*result.data["skipped"], {"mode": mode, "why": "not enough of the part's cap left"}])
            continue
        a = adapter(weights, checkpointing=mode == "checkpointing", compile=mode == "compile")
        for b in plan.prompts:
            need = predicted_gib(estimate, mode == "checkpointing", b)
            if card_gib and need and need > 0.95 * card_gib:
                why = f"estimated {need:.0f} GiB (bench/memory_real_size.py) > the card's {card_gib:.0f} GiB"
                result.set(skipped=[*result.data["skipped"], {"mode": mode, "prompts": b, "why": why}])
                continue
            try:
                row = pgd_row(a, plan, b, mode, flops_by_prompts)
            except torch.cuda.OutOfMemoryError as e:
                torch.cuda.empty_cache()
                result.set(skipped=[*result.data["skipped"], {"mode": mode, "prompts": b, "why": f"out of memory: {e}"[:300]}])
                continue
            if rate and row["tflops"]:
                row["share_of_matmul_rate"] = row["tflops"] / rate
            result.add_row(row)
    rows = result.data["rows"]
    eager = [r for r in rows if r["mode"] == "eager"]
    result.set(worst_attack_vs_bare=max((r["attack_vs_bare"] for r in eager), default=None),
               best_share_of_matmul_rate=max((r["share_of_matmul_rate"] for r in rows if r.get("share_of_matmul_rate")),
                                             default=None))


# -- GOAT scoring -------------------------------------------------------------------------

def part_goat(plan, result: Result, machine: dict, deadline: float) -> None:
    from bench.goat_scoring import scoring_methods
    from goat_bench.parsing import parse_answer
    from goat_bench.prompts import PAPER
    from mmsafety.synthetic import memes

    per_task = -(-plan.goat_memes // len(memes.TASKS))
    pairs = [(t, m) for t in memes.TASKS for m in memes.memes(t, "heldout", per_task, seed=11)][:plan.goat_memes]
    images, prompts = [m.image for _, m in pairs], [PAPER.render(t, m.text) for t, m in pairs]
    a = adapter(model(plan))
    result.set(memes=len(images), batches=list(plan.goat_batches), memes_per_s={})

    def timed_once(fn, n=len(images)):  # each method is warmed up on two memes first (allocations, caches)
        start = time.perf_counter()
        out = fn()
        sync()
        return out, n / (time.perf_counter() - start)

    outputs = {}
    for batch in plan.goat_batches:
        methods, _ = scoring_methods(a, images, prompts, batch)
        warm, _ = scoring_methods(a, images[:2], prompts[:2], batch)
        warm["logprob"]()
        outputs[f"logprob_batch{batch}"], rate = timed_once(methods["logprob"])
        result.set(memes_per_s={**result.data["memes_per_s"], f"logprob_batch{batch}": rate})
    # Batched generate on every meme; the official loop, the slowest by far, on the first
    # plan.goat_loop_memes: its rate is per meme, and the comparison of answers is on those.
    batch, n = plan.goat_batches[0], plan.goat_loop_memes
    _, answers = scoring_methods(a, images, prompts, batch)
    _, warm_answers = scoring_methods(a, images[:2], prompts[:2], batch)
    _, loop_answers = scoring_methods(a, images[:n], prompts[:n], batch)
    for name, fn, count in (("generate_batched", answers["generate_batched"], len(images)),
                            ("official_pattern", loop_answers["official_pattern"], n)):
        warm_answers[name]()
        outputs[name], rate = timed_once(fn, count)
        result.set(memes_per_s={**result.data["memes_per_s"], f"{name}_batch{batch}" if name == "generate_batched" else name: rate})
    outputs["generate_batched"] = outputs["generate_batched"][:n]
    labels = {name: [parse_answer(x).label for x in outputs[name]] for name in ("generate_batched", "official_pattern")}
    rates = result.data["memes_per_s"]
    result.set(
        generate_batch=batch,
        speedup_vs_official_loop={k: v / rates["official_pattern"] for k, v in rates.items()},
        answers_equal_batched_vs_loop=sum(x == y for x, y in zip(outputs["generate_batched"], outputs["official_pattern"])) / n,
        labels_equal_batched_vs_loop=sum(x == y for x, y in zip(labels["generate_batched"], labels["official_pattern"])) / n,
        compared_memes=n,
        logprob_labels_equal_across_batches=sum(
            len({outputs[f"logprob_batch{b}"][i] for b in plan.goat_batches}) == 1 for i in range(len(images))) / len(images),
        labels={"generate_batched": labels["generate_batched"], "official_pattern": labels["official_pattern"]})


# -- memory -------------------------------------------------------------------------------

def part_memory(plan, result: Result, machine: dict, deadline: float) -> None:
    """Peak activation memory of one loss + gradient against the estimate. GPU: the allocator's peak
    vs bench/memory_real_size.py's stored estimate. CPU: every tensor counted on the full small
    model (bench/_memory.py) vs the same 1-and-2-layer extrapolation that estimate uses."""
    from bench.execution_options import peak_step_memory

    from bench.memory_real_size import activation_estimate

    rows = []
    estimate = stored_memory_estimate(plan)
    if CUDA:
        weights = model(plan)
        measured_by = "torch.cuda.max_memory_allocated minus the memory held before the step"
    else:
        weights = model(plan, dtype=torch.bfloat16)  # the estimate counts bf16 tensors
        measured_by = "bench/_memory.py (every tensor the step creates, weights excluded)"
    result.set(measured_by=measured_by, estimate_from=f"bench/results/memory_real_size.jsonl ({estimate['time']})"
               if estimate else "bench/memory_real_size.activation_estimate on this size, counted on the CPU")
    for checkpointing in (False, True):
        a = adapter(weights, checkpointing=checkpointing, dtype=weights[0].dtype)
        for b in plan.memory_prompts:
            if CUDA:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                peak_step_memory(a, b)
                sync()
                measured = (torch.cuda.max_memory_allocated() - before) / GIB
            else:
                measured = peak_step_memory(a, b) / GIB
            if estimate:
                fit = estimate["fits"][str(checkpointing)]
                estimated = fit["fixed_gib"] + fit["per_prompt_gib"] * b
            else:
                estimated = activation_estimate(b, checkpointing, plan.model)["total"] / GIB
            row = {"checkpointing": checkpointing, "prompts": b, "measured_gib": measured, "estimated_gib": estimated,
                   "measured_vs_estimate": measured / estimated if estimated else None}
            rows.append(row)
            result.add_row(row)
        pair = [r for r in rows if r["checkpointing"] == checkpointing]
        lo, hi = pair[0], pair[-1]
        if hi["prompts"] > lo["prompts"]:
            per_prompt = {"checkpointing": checkpointing,
                          "measured_gib": (hi["measured_gib"] - lo["measured_gib"]) / (hi["prompts"] - lo["prompts"])}
            per_prompt["estimated_gib"] = (hi["estimated_gib"] - lo["estimated_gib"]) / (hi["prompts"] - lo["prompts"])
            result.set(per_prompt=[*result.data.get("per_prompt", []), per_prompt])


# -- mmsafety-serve -----------------------------------------------------------------------

def part_serve(plan, result: Result, machine: dict, deadline: float) -> None:
    """The server's app (mmsafety.serving.app, batching up to 16 requests per forward) on a
    loopback port in this process, and the project's served client (logprob scoring of memes)
    at 1, 4 and 16 connections; no added delay: the GPU's own batched throughput."""
    import uvicorn

    from goat_bench.prompts import PAPER
    from mmsafety.models.openai_compatible import OpenAICompatibleAdapter
    from mmsafety.serving.app import create_app
    from mmsafety.synthetic import memes
    from tests.served_support import free_port

    app = create_app(adapter(model(plan)), "gpu-check", max_batch=16)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited before it started")
        time.sleep(0.05)
    most = max(plan.serve_memes.values())
    per_task = -(-most // len(memes.TASKS))
    pairs = [(t, m) for t in memes.TASKS for m in memes.memes(t, "heldout", per_task, seed=12)][:most]
    images, prompts = [m.image for _, m in pairs], [PAPER.render(t, m.text) for t, m in pairs]
    result.set(max_batch=16, memes_per_s={}, mean_batch_size={})
    try:
        for connections, n in plan.serve_memes.items():
            client = OpenAICompatibleAdapter.from_config({
                "name_or_path": "gpu-check", "base_url": f"http://127.0.0.1:{port}/v1", "max_connections": connections,
                "cache": False, "api_key_env": "MMSAFETY_GPU_CHECK_UNUSED_KEY"})
            try:
                client.choice_logprobs(images[:1], prompts[:1], ["Yes", "No"])  # warm-up
                batches_before = len(app.state.batcher.batches)
                start = time.perf_counter()
                client.choice_logprobs(images[:n], prompts[:n], ["Yes", "No"])
                rate = n / (time.perf_counter() - start)
            finally:
                client.close()
            sizes = app.state.batcher.batches[batches_before:]
            result.set(memes_per_s={**result.data["memes_per_s"], str(connections): rate},
                       mean_batch_size={**result.data["mean_batch_size"], str(connections): sum(sizes) / len(sizes)})
    finally:
        server.should_exit = True
        thread.join(10)
    rates = result.data["memes_per_s"]
    result.set(speedup_vs_one_connection={c: r / rates["1"] for c, r in rates.items()})


PART_FUNCTIONS = {"pgd": part_pgd, "goat": part_goat, "memory": part_memory, "serve": part_serve}


def run(part: str, plan, size: str, machine: dict, result_path: Path) -> None:
    result = Result(result_path, size=size, device=DEVICE)
    deadline = time.time() + plan.caps[part]
    PART_FUNCTIONS[part](plan, result, machine, deadline)
