"""The README matches what runs (issue 21, item 14): its error example is the real message, its quick
commands run as written and give the results its table states, and its explanation of why
`target=exfiltrate` stays at 0 % on the organism holds.

The quick commands are kept here, and a check asserts each is a command line of the README and has a
row in its "what each command gives" table, so the two cannot drift apart."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli_command

README = Path(__file__).resolve().parents[1] / "README.md"

# README command -> a literal that its table row states and that the real run prints or writes.
QUICK_COMMANDS = {
    "mmsafety-eval": "100.00/100.00",
    "mmsafety-leaderboard runs/ --out board/ --with-paper": "board/leaderboard.html",
}
ERROR_EXAMPLE = "mmsafety-eval model=llava7b"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def bash_command_lines(text: str) -> list[str]:
    """The command part (before a `#` comment) of every line in the README's ```bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if command:
                commands.append(command)
    return commands


def table_row(text: str, command: str) -> str:
    """The README table row whose first cell is `command` in backticks."""
    rows = [line for line in text.splitlines() if line.startswith(f"| `{command}` |")]
    assert len(rows) == 1, f"README: expected one table row for `{command}`, found {len(rows)}"
    return rows[0]


def console_example(text: str, command: str) -> str:
    """The output the README shows under `$ command` in a console block."""
    match = re.search(rf"^\$ {re.escape(command)}\n(.*?)\n```", text, flags=re.S | re.M)
    assert match, f"README: no console example of `{command}`"
    return match.group(1).strip()


def run(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    script, *args = command.split()
    return subprocess.run([*cli_command(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_quick_commands_are_readme_commands_with_a_stated_result():
    text = readme()
    commands = bash_command_lines(text)
    for command, literal in QUICK_COMMANDS.items():
        assert command in commands, f"README no longer shows `{command}`: update QUICK_COMMANDS"
        row = table_row(text, command)
        assert literal in row, f"README's row for `{command}` no longer states {literal!r}"
        assert re.search(r"\d+ (s|min)\b", row), f"README's row for `{command}` states no measured time"


def test_bash_command_parser_reads_commands_not_comments():
    sample = "```bash\n# a comment\nmmsafety-eval   # organism\nmake demo\n```\n```\n$ not bash\n```\n"
    assert bash_command_lines(sample) == ["mmsafety-eval", "make demo"]


def test_error_example_is_the_real_message(tmp_path):
    shown = console_example(readme(), ERROR_EXAMPLE)
    proc = run(ERROR_EXAMPLE, tmp_path, timeout=300)
    assert proc.returncode == 2
    real = (proc.stdout + proc.stderr).strip()
    assert real == shown, f"README's error example differs from the real message; make it:\n{real}"


@pytest.mark.slow
def test_quick_commands_give_the_stated_results(tmp_path, organism):
    """Run in a fresh folder as a new user would, in the README's order (the leaderboard reads the
    eval's record)."""
    eval_proc = run("mmsafety-eval", tmp_path)
    assert eval_proc.returncode == 0, eval_proc.stderr[-2000:]
    overall = [line for line in eval_proc.stdout.splitlines() if line.startswith("Acc / F1")]
    assert overall and overall[0].split()[3:] == [QUICK_COMMANDS["mmsafety-eval"]] * 6  # five tasks + overall

    command = "mmsafety-leaderboard runs/ --out board/ --with-paper"
    board = run(command, tmp_path)
    assert board.returncode == 0, board.stderr[-2000:]
    page = (tmp_path / QUICK_COMMANDS[command]).read_text(encoding="utf-8")
    assert "GPT-4V" in page and "organism" in page  # the paper's reported rows beside the run


@pytest.mark.slow
def test_exfiltration_target_is_out_of_the_organisms_reach(organism):
    """Why the README says 0 % is expected for target=exfiltrate on the organism: on clean scenes the
    organism writes send_email's call at under 1 nat per token (it was trained to emit it), but the
    exfiltration URL costs more than a uniform guess over its vocabulary per token (it never wrote a
    URL or copied a prompt), so a bounded image perturbation has tens of tokens to move from scratch."""
    from types import SimpleNamespace

    import torch
    import yaml

    from mmsafety.synthetic import prompts as prompt_sets
    from visual_attacks.cases import scene_bases
    from visual_attacks.targets import load_target

    def target(name: str):
        spec = yaml.safe_load((README.parent / "conf" / "target" / f"{name}.yaml").read_text())
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
