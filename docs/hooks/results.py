"""mkdocs hook: the "Measured results" pages, generated at build time from bench/results/*.jsonl.

Every measured number on the site comes from these files (one JSON object a line, each with its
`time` and `machine`), so no number is copied by hand into prose: a new run of a benchmark appends
a line and the next build shows it. The same hook fills `<!-- config-groups -->` in the
configuration reference with the options found in conf/ (so that list cannot go stale either).

Pages: results/index.md (one line per file) and results/<file stem>.md (every row of the file,
with its date and machine). What each file measures is described in RESULTS below; a file without
an entry still gets a page, titled by its name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench" / "results"
CONF = ROOT / "conf"
# Fields shown as the row's heading or left out of its cells.
META = ("time", "machine", "source", "note")
WIDE_MAX_COLUMNS = 9  # more columns than this: one key/value table per row instead of one wide table

# stem -> (title, what it measures and how to read it). Markdown; no measured numbers here.
RESULTS: dict[str, tuple[str, str]] = {
    "demo": ("`make demo`", """
The Quickstart's `make demo` on an empty model cache: the GOAT-Bench eval of the organism on its own
synthetic memes (a check of the harness, not a benchmark), one tool-call attack (clean vs attacked
syntax-success rate on held-out prompts, and how often the benign first line of the answer is kept),
then the leaderboard. Rows before 2026-12-06 include building the organism on first use; from then on
the organism ships inside the package and nothing is trained.
"""),
    "goat_synthetic_eval": ("GOAT-Bench on the synthetic memes", """
`mmsafety-eval model=... scoring=...` on the synthetic held-out sample (100 memes per task). The
random-init LLaVA sits at chance when its Yes/No log-probs are compared, and scores 0 in generate mode
because every answer it writes is byte noise, which the parser marks invalid (invalid counts as
wrong). The synthetic sample is a harness check, not a benchmark: real numbers need the real data.
"""),
    "organism_heldout": ("The model organism, held out", """
`evaluate_organism` on held-out images and held-out prompt wordings (128 per behaviour), beside a
random-init tiny LLaVA; and the HarmBench organisms (the victim on held-out requests, clean and with an
envelope in the image; the judge on held-out requests and phrasings). See [The model organism](../organism.md) for what it was trained to do.
"""),
    "processor_parity": ("Processor parity", """
Each adapter's differentiable preprocessing against the real Hugging Face processor, on memes, scenes,
noise and smooth images from 31x47 to 640x480, in normalised units (`tests/test_processor_parity.py`;
the test's bound is max 0.02, mean 0.005).
"""),
    "attack_presets": ("Tool-call attacks: presets and budgets", """
`mmsafety-attack attack=<preset> attack.eps=<eps> attack.steps=500 images=<scenes> heldout_prompts=<prompts>`
on the organism, send_email target, judged on the reloaded PNGs. Every attack of one scene sees the same
prompt sequence whatever the number of scenes, so the "first 2 scenes" column compares runs of different
sizes on the same scenes. Rows without `attack_seconds` were run beside other jobs; their times are not
comparable. Why `toolmisuse` leaves the PNG equal to the clean image, and why tokenising the target
segments apart fails, is explained in [Visual attacks](../attacks.md).
"""),
    "verdict_flip": ("Verdict flip and CLIP-embedding attacks", """
How much budget hides a flagged meme from the organism (L-inf, sign steps of 1/255, positive held-out
synthetic memes; hidden = the model answers "No" to the meme's own GOAT-Bench question), split by the cue
that flags the meme; and `attack=clip_embed` on `tiny_open_clip` (the caption's zero-shot top-1 rate).
See [Visual attacks](../attacks.md#what-an-attack-aims-at-cases).
"""),
    "attack_strength": ("Attack strength: default vs APGD vs restarts vs worst case", """
`python -m bench.attack_strength` (`--case verdict_flip` for the meme moderator, `--case harmbench` for
the HarmBench victim organism judged by the judge organism): per budget, the default attack,
`optimizer=apgd`, sign PGD with random restarts (`attack.restarts`) and the worst case over them (each
member given an equal share of the steps, so an image costs at most the same forward+backward passes),
run one after the other in one run (`run`), judged from the saved PNGs (held-out prompts; HarmBench: its
completion, labelled by the judge). Runs before 2026-12-06T06:00 had no restarts: their worst case is
over default and apgd, half the steps each. `budget_saved`: the share of passes the per-image early stop
did not need; `won_by`: images per winning member. Load averages are of a 2-core machine shared with
other jobs: times are not comparable across rows. See [Visual attacks](../attacks.md#the-strongest-attack-at-a-budget-apgd-the-worst-case-no-wasted-steps).
"""),
    "transfer_matrix": ("Transfer matrix on the organisms", """
`python -m bench.transfer_matrix --stage craft|judge` crafts on organism seed 0 alone and on seeds 0+1
as an ensemble, each with and without EOT, at each budget, then judges every crafted run on a victim
organism under `png` and `jpeg_75`. Each craft and judgement is an ordinary job folder
(`runs/transfer_matrix/`, resumable; `mmsafety-leaderboard runs/transfer_matrix --out runs/transfer_matrix/board`
draws the same matrix). `asr` is tool-call syntax success (% of held-out answers), `clean` the victim's
rate on the unperturbed scene under the same transform. Seed 1 is held out for the rows crafted on
seed 0 alone but a member of the seeds 0+1 ensemble; seed 2 is held out for every row. See
[Transfer](../transfer.md).
"""),
    "harmbench_methods": ("HarmBench methods on the victim organism", """
`model=harmbench_victim` on the 12 synthetic held-out behaviours, the same completions judged by the
judge organism (`harmbench_cls`) and `refusal_substring`. Rows from 2026-12-06 on (`python -m
bench.harmbench_methods`) run the methods as HarmBench's code builds them, in both prompt formats; the
earlier rows predate that (see [HarmBench](../harmbench.md) for what changed).
"""),
    "harmbench_judge_agreement": ("HarmBench judge agreement", """
`mmsafety-judge-agreement judge=...` on the synthetic validation set (compliant, refusing and off-topic
completions). The stored votes of the synthetic set are simulated (the truth flipped at random), so they
only show the reference rows at work. The refusal-prefix judge calls every off-topic answer a jailbreak:
its false-positive rate is why HarmBench uses a classifier.
"""),
    "attack_step": ("PGD step overhead", """
`python -m bench.attack_step`: one PGD step of mmsafety's attack (8 prompts per step) against a bare
forward+backward of the same batch (`overhead` = ours / bare, target <= 1.05), and prompt-steps per
second of a universal attack at B prompts per batched step. Each step's batch is padded in one tensor
call, and best iterates are kept with `torch.where` (no host sync).
"""),
    "goat_scoring": ("GOAT-Bench scoring throughput", """
`python -m bench.goat_scoring`: memes per second of logprob scoring and batched generation against the
official script's pattern (per meme: chat template, processor, generate, decode), with label agreement
between all methods. Each timed round clears the adapter's prompt-token cache, as a real run sees each
prompt once (earlier rows, before that change, never tokenised in the timed rounds and overstate the
speed-up). How scoring is made fast: the prompts run once, and each choice then costs a forward of its
own one or two tokens; the longest choice's extra tokens ride along with the prompt forward; no KV cache
is kept unless another multi-token choice needs it; same-size images go through the real processor in
one call; scoring runs under `torch.inference_mode`. On the tiny organism the forward is compute-bound
and the one-meme loop does the same prefill work, so the ratio is capped well below the 10x target; on a
7B model the weights dominate each decode step of the one-meme loop, which needs a GPU measurement.
"""),
    "execution_options": ("Gradient checkpointing and `torch.compile`", """
`python -m bench.execution_options`: `placement.gradient_checkpointing=true` and `placement.compile=true`
against eager steps of the same attack (8 prompts per step): time per step, peak tensor memory
(counted op by op by `bench/_memory.py`, weights excluded), compile time and the steps after which the
compile pays for itself. The organism has 2 layers per tower: a 32-layer model keeps far less in
proportion under checkpointing.
"""),
    "ensemble_step": ("Ensemble step", """
`python -m bench.ensemble_step`: one step against an ensemble of surrogates beside the sum of their
single-surrogate steps, and its peak tensor memory beside the largest single surrogate's plus the
perturbation, and beside the same ensemble built as one graph (goals: time <= 1.05x the sum, memory <= 1x).
Peak memory is counted op by op and does not depend on the machine's load; the times do.
"""),
    "eot_step": ("Expectation over transformation", """
`python -m bench.eot_step`: an attack step with `attack.eot.samples` = 1 and 2 against no EOT, and the
transforms alone, with and without kornia's differentiable JPEG (on the CPU most of the transforms'
cost, from its chroma subsampling blur).
"""),
    "growth": ("Growth", """
`python -m bench.growth`: least-squares lines of the PGD step time against prompts per step, prompt
length (super-linear past a few hundred tokens: attention) and input size, and of the logprob eval time
against the number of memes.
"""),
    "image_loading": ("Image decoding in the GOAT eval", """
`python -m bench.image_loading`: 640x480 JPEG memes in batches of 16, the model's forward simulated as a
wait per batch during which the CPU is free (as while a GPU computes); decoding in the loop against
`image_workers` threads decoding ahead.
"""),
    "memory_real_size": ("Activation memory at real size", """
`python -m bench.memory_real_size`: activation memory of one PGD step on a llava-1.5-7b-sized model in
bf16 (CLIP ViT-L/14 at 336 px, Llama-2-7B layers with 576 image tokens and the prompt). Each tower runs
at depths 1 and 2 and the per-layer increment is extended to 24 + 32 layers; every tensor the step
creates is counted until freed, weights not counted. An estimate of a GPU's peak counted on the CPU:
allocator overhead, kernel workspaces and GPU attention kernels are not in it. `fits` gives the most
prompts per step in 90 % of each card's memory.
"""),
    "served_throughput": ("Served-model throughput", """
`python -m bench.served_throughput`: GOAT logprob scoring through `model=openai_compatible` against
`mmsafety-serve --threads 1` (the organism) with an added delay per request, at several
`max_connections` (goal: 12x one connection at 16), plus a fully cached rerun (0 requests sent) and the
client's overhead per request (cache key, cache hit, PNG and JPEG encoding).
"""),
}


def _when(row: dict) -> str:
    return str(row.get("time", "undated")).replace("T", " ")[:16]


def _machine(row: dict) -> str:
    m = row.get("machine") or {}
    if not isinstance(m, dict):
        return str(m)
    parts = [str(m[k]) for k in ("gpu", "cpu") if m.get(k)]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if row.get("device") or m.get("device"):
        parts.append(f"device {row.get('device') or m.get('device')}")
    parts += [f"{k} {m[k]}" for k in ("python", "torch", "transformers", "tokenizers") if m.get(k)]
    return ", ".join(parts) or "unknown machine"


def _number(v) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4g}"


def _cell(v) -> str:
    text = "—" if v is None else _number(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(row: dict, prefix: str = "") -> tuple[dict, dict]:
    """(scalar cells by dotted key, lists of objects by dotted key); meta fields left out at the top."""
    cells, tables = {}, {}
    for key, value in row.items():
        if not prefix and key in META:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            sub_cells, sub_tables = _flatten(value, f"{name}.")
            cells.update(sub_cells)
            tables.update(sub_tables)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables[name] = value
        elif isinstance(value, list):
            cells[name] = ", ".join(_number(v) for v in value)
        else:
            cells[name] = value
    return cells, tables


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _columns(dicts: list[dict]) -> list[str]:
    columns: list[str] = []
    for d in dicts:
        columns += [k for k in d if k not in columns]
    return columns


def _subtables(row: dict, tables: dict) -> list[str]:
    out = []
    for name, items in tables.items():
        flat = [_flatten(item)[0] for item in items]
        columns = _columns(flat)
        out += [f"**{_when(row)} · {_machine(row)}: `{name}`**", "",
                _table(columns, [[f.get(c) for c in columns] for f in flat]), ""]
    return out


def results_page(stem: str, rows: list[dict]) -> str:
    title, intro = RESULTS.get(stem, (stem.replace("_", " ").capitalize(), ""))
    out = [f"# {title}", "", intro.strip(), "",
           f"Generated from `bench/results/{stem}.jsonl` ({len(rows)} row{'s' * (len(rows) != 1)}), oldest first.", ""]
    flat = [_flatten(row) for row in rows]
    columns = _columns([cells for cells, _ in flat])
    # Each distinct note once (a transcription note is shared by every row it covers).
    notes = list(dict.fromkeys(row[k] for row in rows for k in ("source", "note") if row.get(k)))
    if len(columns) <= WIDE_MAX_COLUMNS:
        out += [_table(["date", "machine", *columns],
                       [[_when(row), _machine(row), *(cells.get(c) for c in columns)] for row, (cells, _) in zip(rows, flat)]), ""]
        for row, (_, tables) in zip(rows, flat):
            out += _subtables(row, tables)
    else:
        for row, (cells, tables) in zip(rows, flat):
            out += [f"## {_when(row)} · {_machine(row)}", "", _table(["field", "value"], list(cells.items())), ""]
            out += _subtables(row, tables)
    if notes:
        out += ["Notes:", ""] + [f"- {text}" for text in notes] + [""]
    return "\n".join(out)


def read_results(directory: Path = RESULTS_DIR) -> dict[str, list[dict]]:
    """Every bench/results/*.jsonl file by stem, its rows in file order (blank lines skipped)."""
    return {path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for path in sorted(directory.glob("*.jsonl"))}


def index_page(results: dict[str, list[dict]]) -> str:
    rows = [[f"[{RESULTS.get(stem, (stem, ''))[0]}]({stem}.md)", len(found),
             f"{_when(found[0])} to {_when(found[-1])}" if found else "—"]
            for stem, found in results.items()]
    return "\n".join([
        "# Measured results", "",
        "Every number here is generated when the site is built, from the files in `bench/results/` (one JSON "
        "object a line, each with the date and the machine it was measured on). The `bench/` scripts "
        "measure each number next to its baseline in one run, alternating the two so that drift in machine "
        "speed hits both, and append a line; rows from before the docs site were transcribed from the old "
        "README's tables (their `source` says so). Numbers from different machines or dates are not "
        "comparable.", "",
        _table(["results", "rows", "dates"], rows), ""])


def config_groups_table() -> str:
    groups = sorted(p for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml")))
    rows = [[f"`{p.relative_to(CONF).as_posix()}/`",
             ", ".join(f"`{y.stem}`" for y in sorted(p.glob("*.yaml")))] for p in groups]
    return _table(["group", "options"], rows)


def on_config(config):
    """List every generated page under the nav's "Measured results" entry (the files decide the pages)."""
    pages = ["results/index.md"] + [{RESULTS.get(stem, (stem, ""))[0].replace("`", ""): f"results/{stem}.md"}
                                    for stem in read_results()]
    for i, item in enumerate(config.nav or []):
        if isinstance(item, dict) and item.get("Measured results") == "results/index.md":
            config.nav[i] = {"Measured results": pages}
    return config


def on_files(files, config):
    results = read_results()
    files.append(File.generated(config, "results/index.md", content=index_page(results)))
    for stem, rows in results.items():
        files.append(File.generated(config, f"results/{stem}.md", content=results_page(stem, rows)))
    return files


def composed_defaults(config_name: str) -> str:
    """The config a console script runs with no overrides, as YAML (composed by the package itself,
    so the defaults shown are the ones that run)."""
    from omegaconf import OmegaConf  # the package's own dependencies: only the configuration page needs them

    from mmsafety.app import compose_config

    return OmegaConf.to_yaml(compose_config(config_name))


COMPOSED = re.compile(r"<!-- composed:(\w+) -->")


def on_page_markdown(markdown, page, config, files):
    markdown = markdown.replace("<!-- config-groups -->", config_groups_table())
    return COMPOSED.sub(lambda m: f"```yaml\n{composed_defaults(m.group(1)).rstrip()}\n```", markdown)
