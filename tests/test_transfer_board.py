"""The transfer matrix on the leaderboard: one line per transfer record (surrogate x victim x deploy,
per case, target and budget) in every format, a heat map per matrix in the HTML page, hostile
names escaped. Records are written by hand here (fast); tests/test_transfer.py makes real ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mmsafety.leaderboard.export import write_leaderboard
from visual_attacks.cli import expand_sweep_folder
from visual_attacks.transfer_board import matrices


def transfer_record(folder: Path, surrogates: list[str], victim: str, deploy: str, asr: float, clean: float,
                    eps: float = 16 / 255, eot: str | None = None, weights: list | None = None) -> None:
    folder.mkdir(parents=True)
    spec = {"workload": "transfer", "stage": "judge", "source_run": f"/runs/{'+'.join(surrogates)}-{eps}",
            "surrogates": surrogates, "victim": victim, "deploy": {"name": deploy, "steps": []}, "case": "tool_call",
            "target": "send_email", "attack": "tool_call", "norm": "linf", "eps": eps, "steps": 300, "headline": "syntax", "group_by": [],
            "sample_key": ["image"], **({"eot": eot} if eot else {}),
            **({"surrogate_weights": weights} if weights else {})}
    metrics = {"images": 8, "asr": {"syntax": asr}, "clean_baseline": {"syntax": clean}, "stealth": {"ssim": 0.5},
               "attack_seconds": 1.0}
    record = {"kind": "transfer", "status": "completed", "config": {}, "model": {"name": victim, "weights_sha256": None},
              "spec": spec, "metrics": metrics, "counts": {"ok": 8}, "timing": {"seconds": 1.0}}
    (folder / "record.json").write_text(json.dumps(record))


def test_the_matrix_is_in_every_format_with_the_victims_clean_baseline(tmp_path):
    runs = tmp_path / "runs"
    cells = {  # (surrogates, victim, deploy) -> (asr, clean)
        (("organism (seed 0)",), "organism (seed 2)", "png"): (0.5, 0.0),
        (("organism (seed 0)",), "organism (seed 2)", "jpeg_75"): (0.125, 0.0),
        (("organism (seed 0)", "organism (seed 1)"), "organism (seed 2)", "png"): (0.75, 0.0),
        (("organism (seed 0)", "organism (seed 1)"), "organism (seed 2)", "jpeg_75"): (0.25, 0.0),
        (("organism (seed 0)",), "<script>alert(1)</script>", "png"): (0.0, 0.25),
    }
    for i, ((surrogates, victim, deploy), (asr, clean)) in enumerate(cells.items()):
        transfer_record(runs / f"j{i}", list(surrogates), victim, deploy, asr, clean)
    transfer_record(runs / "eot", ["organism (seed 0)"], "organism (seed 2)", "jpeg_75", 0.375, 0.0, eot="kornia")
    transfer_record(runs / "eps32", ["organism (seed 0)"], "organism (seed 2)", "png", 1.0, 0.0, eps=32 / 255)
    transfer_record(runs / "weighted", ["organism (seed 0)", "organism (seed 1)"], "organism (seed 2)", "png", 0.5, 0.0,
                    eps=32 / 255, weights=[2, 1])
    out = tmp_path / "board"
    summary = write_leaderboard([runs], out)
    assert summary["rows"]["transfer"] == 8 and not summary["problems"]

    table = json.loads((out / "leaderboard.json").read_text())["transfer"]
    by_cell = {(line["surrogate"], line["victim"], line["deploy"], line["eps"]): line for line in table}
    ensemble = by_cell[("organism (seed 0) + organism (seed 1)", "organism (seed 2)", "jpeg_75", "16/255")]
    assert (ensemble["asr"], ensemble["clean_baseline"], ensemble["cell"]) == (25.0, 0.0, "25.0 (clean 0.0)")
    assert by_cell[("organism (seed 0) + EOT", "organism (seed 2)", "jpeg_75", "16/255")]["asr"] == 37.5
    assert by_cell[("organism (seed 0)", "organism (seed 2)", "png", "32/255")]["asr"] == 100.0
    assert by_cell[("2 x organism (seed 0) + 1 x organism (seed 1)", "organism (seed 2)", "png", "32/255")]["asr"] == 50.0

    grouped = matrices(table)  # one matrix per case, target and budget
    assert sorted(k[3] for k in grouped) == ["16/255", "32/255"]
    m16 = grouped[("tool_call", "send_email", "tool_call", "16/255", 300)]
    assert m16["rows"] == ["organism (seed 0)", "organism (seed 0) + EOT", "organism (seed 0) + organism (seed 1)"]
    assert ("organism (seed 2)", "jpeg_75") in m16["columns"] and len(m16["columns"]) == 3
    assert m16["cells"][("organism (seed 0)", ("organism (seed 2)", "jpeg_75"))] == {"asr": 12.5, "clean_baseline": 0.0, "runs": 1}

    with open(out / "leaderboard.csv", newline="") as f:
        lines = [r for r in csv.DictReader(f) if r["table"] == "transfer"]
    assert {r["cell"] for r in lines} >= {"50.0 (clean 0.0)", "12.5 (clean 0.0)", "75.0 (clean 0.0)"}
    md = (out / "leaderboard.md").read_text()
    assert "## Transfer" in md and r"| organism \(seed 0\) \+ organism \(seed 1\) | organism \(seed 2\) | jpeg\_75 |" in md
    # The matrix itself (rows: surrogate; columns: victim / deploy) in Markdown, HTML and JSON.
    pivots = {p["title"]: p for p in json.loads((out / "leaderboard.json").read_text())["transfer_pivots"]}
    p16 = pivots["Transfer matrix: tool_call · send_email · tool_call · eps 16/255 · 300 steps"]
    assert p16["columns"][0] == "crafted on" and "organism (seed 2) / jpeg_75" in p16["columns"]
    by_row = {line["crafted on"]: line for line in p16["rows"]}
    assert by_row["organism (seed 0) + organism (seed 1)"]["organism (seed 2) / jpeg_75"] == "25.0 (clean 0.0)"
    assert by_row["organism (seed 0) + EOT"]["organism (seed 2) / png"] is None  # never judged: an empty cell
    assert r"| crafted on | &lt;script&gt;alert\(1\)&lt;/script&gt; / png |" in md and "<script>" not in md
    assert r"| organism \(seed 0\) + EOT |" not in md and r"| organism \(seed 0\) \+ EOT |  |" in md
    page = (out / "leaderboard.html").read_text()
    assert page.count('<table class="pivot">') == 2 and "<td>25.0 (clean 0.0)</td>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    heat_maps = sorted(p.name for p in out.glob("transfer_*.png"))
    assert heat_maps == ["transfer_tool_call-send_email-tool_call-16-255-300.png", "transfer_tool_call-send_email-tool_call-32-255-300.png"]
    assert page.count('alt="transfer_tool_call') == 2


def test_runs_that_land_in_one_cell_are_pooled_over_their_images_not_dropped():
    line = {"case": "tool_call", "target": "send_email", "attack": "tool_call", "eps": "16/255", "steps": 300,
            "surrogate": "organism (seed 0)", "victim": "organism (seed 2)", "deploy": "png"}
    table = [{**line, "asr": 50.0, "clean_baseline": 0.0, "images": 8},
             {**line, "asr": 20.0, "clean_baseline": 10.0, "images": 2}]  # e.g. the same attack with another seed
    [matrix] = matrices(table).values()
    assert matrix["cells"][("organism (seed 0)", ("organism (seed 2)", "png"))] == {"asr": 44.0, "clean_baseline": 2.0, "runs": 2}


def test_a_sweep_folder_becomes_one_judge_job_per_attack_job(tmp_path):
    sweep = tmp_path / "sweep"
    for name, kind in (("0-a", "visual_attack"), ("1-b", "visual_attack"), ("2-eval", "goat_bench")):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "record.json").write_text(json.dumps({"kind": kind}))
    args = expand_sweep_folder([f"attack_run={sweep}", "deploy=png,jpeg_75", f"hydra.run.dir={tmp_path / 'out'}"])
    assert args == ["-m", f"attack_run='{sweep / '0-a'}','{sweep / '1-b'}'", "deploy=png,jpeg_75",
                    f"hydra.sweep.dir={tmp_path / 'out'}"]
    single = [f"attack_run={sweep / '0-a'}", "model=organism"]
    assert expand_sweep_folder(single) == single  # one attack job: one job, as given
    empty = [f"attack_run={tmp_path}/nothing-here"]
    assert expand_sweep_folder(empty) == empty  # left for the job's own one-line refusal


def test_dollar_signs_in_names_are_text_in_the_heat_map_not_math(tmp_path):
    """A caption or model name with `$...$` (invalid TeX here) must not break the leaderboard."""
    runs = tmp_path / "runs"
    transfer_record(runs / "a", ["pay $5 now, \\frac{ $"], "victim $x^$", "png", 0.5, 0.0)
    summary = write_leaderboard([runs], tmp_path / "board")
    assert summary["rows"]["transfer"] == 1 and len(list((tmp_path / "board").glob("transfer_*.png"))) == 1


def test_one_attack_run_spelled_two_ways_is_one_judge_job_and_nested_records_are_not_jobs(tmp_path, monkeypatch):
    """The judge's folder name hashes attack_run as given: a relative spelling is resolved first, so
    `runs/x`, `./runs/x` and the absolute path are one job. A record inside an attack run (a HarmBench
    re-judge's judged-<judge>/) is not an attack job of a sweep."""
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"kind": "visual_attack"}))
    monkeypatch.chdir(tmp_path)
    assert expand_sweep_folder(["attack_run=runs/x"]) == expand_sweep_folder(["attack_run=./runs/x"]) == [f"attack_run='{run}'"]
    (run / "judged-refusal_substring").mkdir()
    (run / "judged-refusal_substring" / "record.json").write_text(json.dumps({"kind": "visual_attack"}))
    other = tmp_path / "runs" / "y"
    other.mkdir()
    (other / "record.json").write_text(json.dumps({"kind": "visual_attack"}))
    from visual_attacks.transfer import attack_runs_under

    assert attack_runs_under(tmp_path / "runs") == [run, other]


def test_image_names_in_samples_cannot_lead_out_of_the_run_folder(tmp_path):
    """A sample's PNG names are data: an absolute path, `..` or a symlink out is neither thumbnailed on the
    page nor read by the judge."""
    import pytest

    from mmsafety.errors import UserError
    from mmsafety.paths import inside
    from visual_attacks.judge import saved_pngs

    run, secret = tmp_path / "run", tmp_path / "secret.png"
    (run / "images").mkdir(parents=True)
    secret.write_bytes(b"not yours")
    (run / "images" / "a.png").write_bytes(b"x")
    (run / "images" / "link.png").symlink_to(secret)
    assert inside(run, "images/a.png") == (run / "images" / "a.png").resolve()
    for hostile in (str(secret), "../secret.png", "images/../../secret.png", "images/link.png", None, 5):
        assert inside(run, hostile) is None
    with pytest.raises(UserError, match="not a file inside the run folder"):
        saved_pngs(run, {"image": 0, "clean_png": "images/a.png", "adversarial_png": str(secret)})


def test_a_preset_whose_steps_were_overridden_is_its_own_column(tmp_path):
    """`deploy=downscale_2 deploy.steps.0.factor=4` keeps the preset's name: the matrix must not pool it
    with the real downscale_2."""
    from omegaconf import OmegaConf

    from visual_attacks.deploy import build_deploy

    preset = build_deploy(OmegaConf.load(Path(__file__).parents[1] / "conf" / "deploy" / "downscale_2.yaml")).spec()
    quarter = {"name": "downscale_2", "steps": [{**preset["steps"][0], "factor": 4}]}
    runs = tmp_path / "runs"
    for name, deploy, asr in (("half", preset, 0.5), ("quarter", quarter, 0.25)):
        transfer_record(runs / name, ["organism (seed 0)"], "organism (seed 2)", "png", asr, 0.0)
        record = json.loads((runs / name / "record.json").read_text())
        record["spec"]["deploy"] = deploy
        (runs / name / "record.json").write_text(json.dumps(record))
    write_leaderboard([runs], tmp_path / "board")
    table = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["transfer"]
    assert sorted(line["deploy"] for line in table) == ["downscale_2", "downscale_2 [kind=downscale factor=4 resample=bicubic]"]
    [matrix] = matrices(table).values()
    assert len(matrix["columns"]) == 2 and all(cell["runs"] == 1 for cell in matrix["cells"].values())
