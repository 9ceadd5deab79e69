"""The README and the docs site show commands that work (issue 28 item 6; before it, issue 21 item 14).

- The README is a short guide: at most 250 lines, its Quickstart exactly `make demo` and `make test`
  (both real Makefile targets), its first three commands real console scripts, its links real files.
- Every `mmsafety-eval` / `mmsafety-attack` / `mmsafety-judge` command in a ```bash block of the README
  or the docs composes against the configs as written, every value of every sweep: a renamed key,
  group or option in the code fails here, not in a reader's terminal.
- The docs' error example is the real message, and (slow) the README's first commands run as written
  and give what it says; the docs' explanation of why `target=exfiltrate` stays at 0 % on the organism
  holds.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli_command

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Job commands and the primary config each composes (conf/<name>.yaml).
JOB_CONFIGS = {"mmsafety-eval": "eval", "mmsafety-attack": "attack", "mmsafety-judge": "judge"}
FIRST_COMMANDS = ("mmsafety-eval", "mmsafety-attack", "mmsafety-leaderboard")
ERROR_EXAMPLE = "mmsafety-eval model=llava7b"
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def bash_command_lines(text: str) -> list[str]:
    """The command part (before a `#` comment) of every line in the ```bash blocks, with `\\`
    continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0].split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if command:
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def job_commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) of each job command shown, leading VAR=value assignments dropped; lines
    that stand for a family of commands (`...`, `<placeholder>`) are not runnable as written."""
    out = []
    for line in bash_command_lines(text):
        words = shlex.split(line)
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        rest = " ".join(words)
        if words and words[0] in JOB_CONFIGS and "..." not in rest and not re.search(r"<\w", rest):
            out.append((words[0], words[1:]))
    return out


def variants(arguments: list[str]) -> list[list[str]]:
    """Plain override lists that cover every value of every sweep (`key=a,b`), each sweep's values in
    turn with the others at their first (the commands' own pre-run check, mmsafety.cli.sweeps); `-m`
    left out, and Hydra's own overrides (hydra.*, hydra/launcher=) skipped there, as they configure
    Hydra, not the job."""
    from mmsafety.cli.sweeps import override_variants

    return override_variants([a for a in arguments if a != "-m"])


def docs_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def run(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    script, *args = command.split()
    return subprocess.run([*cli_command(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_readme_is_a_short_guide():
    lines = readme().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the details into docs/ (at most 250)"


def test_quickstart_is_two_make_targets_that_exist():
    shown = bash_command_lines(section(readme(), "Quickstart"))
    assert shown == ["make demo", "make test"], shown
    for command in shown:  # a dry run: make resolves the target and its prerequisites, runs nothing
        proc = subprocess.run([*command.split(), "-n"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"`{command} -n` failed:\n{proc.stderr}"


def test_first_commands_are_the_console_scripts():
    from importlib.metadata import entry_points

    scripts = {entry.name for entry in entry_points(group="console_scripts")}
    shown = [line.split()[0] for line in bash_command_lines(section(readme(), "The first three commands"))]
    assert tuple(shown) == FIRST_COMMANDS, shown
    assert set(shown) <= set(scripts), set(shown) - set(scripts)


def test_readme_links_point_at_files():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local), "the README links no docs page"
    missing = [link for link in local if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"


def test_docs_command_parsers():
    sample = ("```bash\n# a comment\nmmsafety-eval   # organism\nOPENAI_API_KEY=... mmsafety-eval model=gpt_4o \\\n"
              "    scoring=generate\nmmsafety-attack deploy=jpeg_75 ...\nmake demo\n```\n```\n$ not bash\n```\n")
    assert bash_command_lines(sample) == ["mmsafety-eval", "OPENAI_API_KEY=... mmsafety-eval model=gpt_4o scoring=generate",
                                          "mmsafety-attack deploy=jpeg_75 ...", "make demo"]
    assert job_commands(sample) == [("mmsafety-eval", []), ("mmsafety-eval", ["model=gpt_4o", "scoring=generate"])]
    assert variants(["-m", "a=1,2", "b=x", "c=3,4", "hydra.run.dir=d", "hydra/launcher=slurm"]) == [
        ["a=1", "b=x", "c=3"], ["a=2", "b=x", "c=3"], ["a=1", "b=x", "c=4"]]


def shown_job_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, arguments) of every job command on the README and the docs pages."""
    return [(path.relative_to(ROOT).as_posix(), script, args)
            for path in [README, *docs_pages()] for script, args in job_commands(path.read_text(encoding="utf-8"))]


def test_docs_show_job_commands_of_each_kind():
    scripts = {script for _, script, _ in shown_job_commands()}
    assert scripts == set(JOB_CONFIGS), scripts  # the parser finds the commands it is meant to check


@pytest.mark.parametrize("page,script,arguments", shown_job_commands(),
                         ids=lambda value: value if isinstance(value, str) else " ".join(value)[:60])
def test_docs_job_commands_compose(page, script, arguments):
    from mmsafety.app import compose_config
    from mmsafety.errors import UserError

    for overrides in variants(arguments):
        try:
            compose_config(JOB_CONFIGS[script], overrides)
        except UserError as e:
            pytest.fail(f"{page}: `{script} {' '.join(overrides)}` does not compose: {e}")


def console_example(text: str, command: str) -> str:
    """The output a page shows under `$ command` in a console block."""
    match = re.search(rf"^\$ {re.escape(command)}\n(.*?)\n```", text, flags=re.S | re.M)
    assert match, f"no console example of `{command}`"
    return match.group(1).strip()


def test_error_example_is_the_real_message(tmp_path):
    shown = console_example((DOCS / "running.md").read_text(encoding="utf-8"), ERROR_EXAMPLE)
    proc = run(ERROR_EXAMPLE, tmp_path, timeout=300)
    assert proc.returncode == 2
    real = (proc.stdout + proc.stderr).strip()
    assert real == shown, f"docs/running.md's error example differs from the real message; make it:\n{real}"


@pytest.mark.slow
def test_first_commands_give_what_the_readme_says(tmp_path, organism):
    """`mmsafety-eval` and the leaderboard command, run in a fresh folder as the README shows them (the
    leaderboard reads the eval's record)."""
    commands = {line.split()[0]: line for line in bash_command_lines(section(readme(), "The first three commands"))}
    stated = re.search(r"Overall \((\d+\.\d) for the organism", section(readme(), "The first three commands")).group(1)
    eval_proc = run(commands["mmsafety-eval"], tmp_path)
    assert eval_proc.returncode == 0, eval_proc.stderr[-2000:]
    overall = [line for line in eval_proc.stdout.splitlines() if line.startswith("Acc / F1")]
    assert overall and overall[0].split()[-1] == f"{stated}/{stated}"  # the README's overall Acc / F1, one decimal

    board = run(commands["mmsafety-leaderboard"], tmp_path)
    assert board.returncode == 0, board.stderr[-2000:]
    page = (tmp_path / "board" / "leaderboard.html").read_text(encoding="utf-8")
    assert "GPT-4V" in page and "organism" in page  # the paper's reported rows beside the run


@pytest.mark.slow
def test_exfiltration_target_is_out_of_the_organisms_reach(organism):
    """Why docs/attacks.md says 0 % is expected for target=exfiltrate on the organism: on clean scenes
    the organism writes send_email's call at under 1 nat per token (it was trained to emit it), but the
    exfiltration URL costs more than a uniform guess over its vocabulary per token (it never wrote a
    URL or copied a prompt), so a bounded image perturbation has tens of tokens to move from scratch."""
    from types import SimpleNamespace

    import torch
    import yaml

    from mmsafety.synthetic import prompts as prompt_sets
    from visual_attacks.cases import scene_bases
    from visual_attacks.targets import load_target

    def target(name: str):
        spec = yaml.safe_load((ROOT / "conf" / "target" / f"{name}.yaml").read_text())
        spec.pop("defaults", None)
        return load_target(SimpleNamespace(**spec))

    prompts = prompt_sets.benign_prompts("heldout")[:4]
    images = [base.image for base in scene_bases(2, 0)]
    pixels = organism.to_input_pixels([image for image in images for _ in prompts])
    batch = [prompt for _ in images for prompt in prompts]
    uniform = math.log(len(organism.tokenizer))
    with torch.no_grad():
        nll = {name: float(organism.target_loss(pixels, batch, [target(name).render(p) for p in batch]).mean())
               for name in ("send_email", "exfiltrate")}
    assert nll["send_email"] < 1.0 < uniform < nll["exfiltrate"], (nll, uniform)
