"""Every GPU number of the project in one call: machine info, then PGD, GOAT scoring, memory and
`mmsafety-serve` on a llava-1.5-7b-shaped random-init model, one JSON line each, in DIR/gpu_check.jsonl.

    bench/gpu_check.sh --size real --out DIR     # one H100: at most 8 minutes
    bench/gpu_check.sh --size small --out DIR    # the same parts on a small config, on the CPU

Each part runs in its own process under a hard time cap (PLANS): a part that fails, runs out of
memory or time writes its line with `ok: false` and its error (with whatever rows it finished),
and the next part starts. Nothing is installed: the machine line reports the versions found
against pyproject.toml's ranges. docs/gpu-check.md says what each field means and the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
# The goals (docs/gpu-check.md): attack_vs_bare is a ceiling, the others are floors.
GOALS = {"attack_vs_bare": 1.02, "share_of_matmul_rate": 0.5, "logprob_vs_official_loop": 20.0,
         "serve_16_vs_1_connections": 15.0}


@dataclass(frozen=True)
class Plan:
    """What one size runs. Caps are hard (the part's process is killed); `row_s` is the time one
    PGD row aims at, from which its step count follows (`steps_for`)."""
    model: str                      # a key of bench.gpu_real_size.SIZES
    prompts: tuple[int, ...]        # prompts per PGD step
    modes: tuple[str, ...]          # eager, checkpointing, compile
    row_s: float                    # seconds of timed steps per PGD row (attack and bare together)
    repeats: int                    # alternating timed repeats per PGD row (medians)
    compile_min_s: float            # the compile rows start only with this much of the PGD cap left
    goat_memes: int
    goat_loop_memes: int            # the official one-meme loop runs on the first this many
    goat_batches: tuple[int, ...]
    memory_prompts: tuple[int, ...]
    serve_memes: dict               # connections -> memes sent
    caps: dict                      # part -> seconds
    matmul_n: int


PLANS = {
    # 7B in bf16 on one H100: model build ~20 s per part; PGD rows of ~6 s; compile only if 100 s are left.
    "real": Plan("llava-1.5-7b", (1, 8, 32), ("eager", "checkpointing", "compile"), 6.0, 3, 100.0,
                 64, 32, (16, 64), (1, 8), {1: 16, 4: 32, 16: 64},
                 {"machine": 30, "pgd": 220, "goat": 90, "memory": 50, "serve": 70}, 8192),
    # The same code on the CPU: fp32, fewer prompts; compiling on the CPU takes minutes, so not here.
    # Caps only stop a hung part: a shared CPU can be 5x slower than an idle one.
    "small": Plan("small", (1, 2), ("eager", "checkpointing"), 1.0, 1, 0.0,
                  16, 8, (8, 16), (1, 4), {1: 4, 4: 8, 16: 16},
                  {"machine": 120, "pgd": 600, "goat": 600, "memory": 600, "serve": 600}, 512),
}
PARTS = ("pgd", "goat", "memory", "serve")


# -- machine line -------------------------------------------------------------------------

def required_versions() -> dict[str, str]:
    """Package -> version range, from pyproject.toml's dependencies (read as text: no toml parser needed)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("dependencies = ["):]
    block = block[:block.index("]")]
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r'"([A-Za-z0-9_.-]+)\s*([<>=!~][^"]*)"', block)}


def package_versions() -> dict:
    """Each dependency the parts import: the version found, the range required, and whether it fits."""
    from importlib import metadata

    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # only for the check itself; the parts do not need it
        SpecifierSet = None
    wanted = ["torch", "transformers", "tokenizers", "safetensors", "pillow", "numpy", "fastapi", "uvicorn", "openai"]
    ranges = required_versions()
    out = {}
    for name in wanted:
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = None
        spec = ranges.get(name)
        ok = None if found is None or spec is None or SpecifierSet is None else \
            SpecifierSet(spec).contains(found.split("+")[0], prereleases=True)
        out[name] = {"found": found, "required": spec, "ok": False if found is None else ok}
    return out


def matmul_rate(n: int) -> dict:
    """TFLOP/s of an n x n matmul measured here: bf16 on a GPU, fp32 on the CPU (bf16 matmuls
    there are not what the CPU runs fast, and `--size small` runs its model in fp32)."""
    import torch

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a @ b, sync()  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < 1.0:  # about a second of matmuls
        a @ b
        reps += 1
    sync()
    seconds = (time.perf_counter() - start) / reps
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "tflops": 2 * n**3 / seconds / 1e12,
            "device": device}


def machine_info(plan: Plan) -> dict:
    import torch

    info = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": None, "gpu_memory_gib": None, "driver": None}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError as e:
        info["transformers"] = None
        info["transformers_error"] = str(e)
    info["packages"] = package_versions()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"], info["gpu_memory_gib"] = props.name, props.total_memory / GIB
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            pass
    info["matmul"] = matmul_rate(plan.matmul_n)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the parts run in other processes: leave them the card
    return info


def goals(line: dict) -> dict:
    """Each goal a part's line measures: {goal, measured, met}; none for what it did not measure.
    PGD is judged on its worst eager overhead and its best share of the matmul rate; GOAT on its
    best logprob batch size."""
    speedups = line.get("speedup_vs_official_loop") or {}
    measured = {
        "pgd": {"attack_vs_bare": line.get("worst_attack_vs_bare"),
                "share_of_matmul_rate": line.get("best_share_of_matmul_rate")},
        "goat": {"logprob_vs_official_loop": max((v for k, v in speedups.items() if k.startswith("logprob")), default=None)},
        "serve": {"serve_16_vs_1_connections": (line.get("speedup_vs_one_connection") or {}).get("16")},
    }.get(line["part"], {})
    return {name: {"goal": GOALS[name], "measured": value,
                   "met": value <= GOALS[name] if name == "attack_vs_bare" else value >= GOALS[name]}
            for name, value in measured.items() if value is not None}


# -- running the parts --------------------------------------------------------------------

def run_part(name: str, size: str, timeout_s: float, machine: dict | None = None) -> dict:
    """Part `name` in its own process, killed (with its children) after `timeout_s`: its JSON
    line, with `ok`, `seconds` and, when it failed, `error` and the rows it had finished."""
    with tempfile.TemporaryDirectory() as tmp:
        result, context = Path(tmp) / "result.json", Path(tmp) / "machine.json"
        context.write_text(json.dumps(machine or {}))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--size", size,
               "--result", str(result), "--machine", str(context)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # its own group: torch.compile's workers die with it
        try:
            log, _ = proc.communicate(timeout=timeout_s)
            error = None if proc.returncode == 0 else (log.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            error = f"timed out after its cap of {timeout_s:g} s (rows finished before are kept)"
        line = json.loads(result.read_text()) if result.exists() else {}
    line = {"part": name, "ok": error is None, **line, "seconds": time.perf_counter() - start}
    line["goals"] = goals(line)
    if error:
        line["error"] = error
        line["log_tail"] = log[-2000:]
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(PLANS), default="small")
    ap.add_argument("--out", type=Path, help="folder for gpu_check.jsonl")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"a comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # the child process of one part
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--machine", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    plan = PLANS[args.size]
    if args.part:
        from bench import gpu_check_parts

        machine = json.loads(args.machine.read_text()) if args.machine else {}
        gpu_check_parts.run(args.part, plan, args.size, machine, args.result)
        return 0
    if args.out is None:
        ap.error("--out DIR is required")
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"--parts: unknown {','.join(unknown)}; choose from {','.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.jsonl"
    start = time.perf_counter()
    with open(path, "w") as f:
        def write(line: dict) -> None:
            f.write(json.dumps(line) + "\n")
            f.flush()  # a call cut short keeps the lines written so far
            print(json.dumps(line)[:400], flush=True)

        try:
            machine = {"part": "machine", "ok": True, "size": args.size,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine_info(plan)}
        except Exception as e:  # noqa: BLE001 - the guard: the parts still run
            machine = {"part": "machine", "ok": False, "size": args.size, "error": f"{type(e).__name__}: {e}"}
        write(machine)
        for name in parts:
            try:
                write(run_part(name, args.size, plan.caps[name], machine))
            except Exception as e:  # noqa: BLE001 - the guard around the guard (e.g. no process could start)
                write({"part": name, "ok": False, "error": f"{type(e).__name__}: {e}"})
    print(f"{path}: {len(parts) + 1} lines in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
