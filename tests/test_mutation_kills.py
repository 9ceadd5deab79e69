"""Tests written to kill surviving mutants of `make mutation` (docs/testing.md lists which): each
asserts behaviour against a reference outside the module it checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def test_lpips_looks_for_alexnet_where_torchvision_itself_reads_it(tmp_path, monkeypatch):
    """The file `lpips_available` checks is the one torchvision loads for AlexNet_Weights.DEFAULT:
    a marker saved there is what torch.hub returns, without any download."""
    from torchvision.models import AlexNet_Weights

    from visual_attacks import stealth

    def no_download(*args, **kwargs):
        raise AssertionError(f"torch.hub would download {args[0]}: it did not find the file at {args[1]}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    path = stealth.alexnet_weights_path()
    assert not stealth.lpips_available()
    path.parent.mkdir(parents=True)
    torch.save({"marker": torch.tensor([7])}, path)
    assert stealth.lpips_available()
    loaded = torch.hub.load_state_dict_from_url(AlexNet_Weights.DEFAULT.url, progress=False)
    assert loaded["marker"].tolist() == [7]


# -- mmsafety/records.py ------------------------------------------------------------------------

def _open(folder, config=None, **kwargs):
    from mmsafety.records import RunRecord

    return RunRecord.open(folder, "toy", config if config is not None else {"n": 1}, versions=lambda: {"v": "1"},
                          **kwargs)


def test_the_config_hash_ignores_key_order_and_accepts_values_json_cannot_encode():
    """Two configs that say the same thing resume each other whatever order their keys come in (Hydra
    and a hand-written yaml may order them differently); a Path in a config hashes as its text."""
    from pathlib import Path

    from mmsafety.records import config_sha256

    a = {"model": {"name": "m", "cache": "/c"}, "seed": 0}
    b = {"seed": 0, "model": {"cache": "/c", "name": "m"}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256({"seed": 0}) != config_sha256({"seed": 1})
    assert config_sha256({"root": Path("/data/x")}) == config_sha256({"root": "/data/x"})


def test_read_samples_names_the_editors_line_number_and_drops_a_torn_last_line(tmp_path):
    from mmsafety.records import read_samples

    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"id": "a"}\n' b'not json\n' b'{"id": "b"}\n' b'[1, 2]\n' b'{"id": "c", "torn')
    problems: list[str] = []
    assert read_samples(path, problems) == [{"id": "a"}, {"id": "b"}]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4"]
    assert all(len(p) > len("line 2: ") for p in problems)  # each with its reason
    assert read_samples(path) == [{"id": "a"}, {"id": "b"}]  # no problems list: the same samples, no error


def test_a_record_used_as_a_context_manager_opens_itself(tmp_path):
    from mmsafety.records import RunRecord, read_samples

    with RunRecord(tmp_path / "run", "toy", {"n": 1}, versions=lambda: {"v": "1"}) as record:
        record.add_sample({"id": "a"})
    assert read_samples(tmp_path / "run" / "samples.jsonl") == [{"id": "a"}]
    assert json.loads((tmp_path / "run" / "record.json").read_text())["status"] == "partial"


def test_opening_creates_missing_parent_folders_and_refuses_a_second_open(tmp_path):
    folder = tmp_path / "sweep" / "0" / "run"
    record = _open(folder)
    try:
        with pytest.raises(RuntimeError, match=str(folder)):
            record._open()
    finally:
        record.close()


def test_an_open_record_holds_the_lock_the_slurm_launcher_checks(tmp_path):
    """mmsafety.cli.slurm_launcher tells a running job by trying to flock `.record.lock` itself."""
    import fcntl

    record = _open(tmp_path)
    try:
        with open(tmp_path / ".record.lock", "w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        record.close()
    with open(tmp_path / ".record.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close


def test_a_failed_run_with_no_sample_gives_way_to_a_corrected_config_and_one_with_samples_does_not(tmp_path):
    from mmsafety.errors import UserError

    for folder, samples in ((tmp_path / "empty", 0), (tmp_path / "some", 1)):
        record = _open(folder, {"placement": "cuda"})
        for k in range(samples):
            record.add_sample({"id": str(k)})
        first = record.data["run_id"]
        record.write("failed")
        record.close()
        if samples:
            with pytest.raises(UserError, match="different config"):
                _open(folder, {"placement": "cpu"})
        else:
            record = _open(folder, {"placement": "cpu"})
            assert record.data["run_id"] != first and record.data["config"] == {"placement": "cpu"}
            assert record.data["timing"]["resumes"] == 0 and record.previous == {}
            record.close()


def test_the_record_keeps_the_command_line_and_a_fresh_run_retries_nothing(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["mmsafety-eval", "task=sarcasm", "seed=3"])
    record = _open(tmp_path)
    try:
        assert record.retried_errors == 0
        on_disk = json.loads((tmp_path / "record.json").read_text())
        assert on_disk["command"] == "mmsafety-eval task=sarcasm seed=3"
        assert on_disk["versions"] == {"v": "1"}
    finally:
        record.close()


def test_open_passes_the_workload_schema_so_resume_sets_aside_samples_that_do_not_fit(tmp_path):
    from mmsafety.record_schema import RecordSchema

    schema = RecordSchema.from_shapes("toy", samples={"ok": {"label": int}})
    record = _open(tmp_path, schema=schema)
    record.add_sample({"id": "a", "label": 1})
    record.add_sample({"id": "b", "label": "one"})
    record.write("partial")
    record.close()
    record = _open(tmp_path, schema=schema)
    try:
        assert [s["id"] for s in record.samples] == ["a"]
        assert record.data["resume_rejected"]["lines"] == 1
    finally:
        record.close()


def test_samples_are_utf8_text_whatever_the_locale_and_paths_are_written_as_text(tmp_path):
    """A sample with non-ASCII text is stored as readable UTF-8 (not \\u escapes), also in a process
    whose locale encoding is ASCII (LC_ALL=C without Python's UTF-8 mode)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    # mutmut names mutants of methods with "ǁ", which an ASCII locale cannot carry in the environment:
    # the name travels hex-encoded into a plain-dict os.environ (a no-op outside mutation testing).
    code = ("import os, sys; from pathlib import Path; from mmsafety.records import RunRecord\n"
            "if os.environ.get('MUTANT_HEX'): os.environ = {**os.environ, 'MUTANT_UNDER_TEST': bytes.fromhex("
            "os.environ['MUTANT_HEX']).decode()}\n"
            "r = RunRecord.open(sys.argv[1], 'toy', {}, versions=lambda: {})\n"
            "r.add_sample({'id': 'a', 'text': 'caf\\u00e9 \\u2713', 'image': Path('/m/x.png')}); r.close()\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    if "MUTANT_UNDER_TEST" in env:
        env["MUTANT_HEX"] = env.pop("MUTANT_UNDER_TEST").encode().hex()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = (tmp_path / "samples.jsonl").read_bytes()
    assert "café ✓".encode("utf-8") in line
    assert json.loads(line) == {"id": "a", "text": "café ✓", "image": "/m/x.png"}
    # The same run resumed here reads it back. (This also puts `RunRecord._start` in the test's coverage for
    # mutmut, whose stats see calls in this process only: without it the child's check never ran on its mutants.)
    from mmsafety.records import RunRecord

    with RunRecord.open(tmp_path, "toy", {}, versions=lambda: {}) as resumed:
        assert resumed.samples == [{"id": "a", "text": "café ✓", "image": "/m/x.png"}]


def test_checkpoint_rewrites_the_record_only_once_its_interval_has_passed(tmp_path, monkeypatch):

    from mmsafety import records

    now = [1000.0]
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    record = _open(tmp_path)
    try:
        record.add_sample({"id": "a"})
        record.checkpoint()  # 0 s after the opening write: not yet
        assert json.loads((tmp_path / "record.json").read_text())["counts"]["ok"] == 0
        now[0] += 1.999
        record.checkpoint()
        assert json.loads((tmp_path / "record.json").read_text())["counts"]["ok"] == 0
        now[0] = 1002.0  # exactly the default 2 s
        record.checkpoint()
        assert json.loads((tmp_path / "record.json").read_text())["counts"]["ok"] == 1
    finally:
        record.close()


def test_resume_retries_errors_sets_aside_unusable_lines_and_keeps_the_rest_byte_for_byte(tmp_path):
    """What each earlier line becomes on resume, checked on the files a user would open: answers stay
    (the same bytes), errored samples move to samples.retried.jsonl to be sent again, unusable lines
    move to samples.rejected.jsonl with their editor line number, and a torn last line is cut."""
    from mmsafety.record_schema import RecordSchema
    from mmsafety.records import RunRecord, read_samples

    schema = RecordSchema.from_shapes("toy", samples={"ok": {"label": int, "a": int, "b": int, "c": int, "d": int}})
    record = _open(tmp_path, schema=schema)
    record.close()
    ok1 = b'{"id": "1", "label": 1, "a": 1, "b": 1, "c": 1, "d": 1}\n'
    error = b'{"id": "2", "status": "error", "reason": "server gone"}\n'
    ok2 = b'{"id": "5", "label": 0, "a": 1, "b": 1, "c": 1, "d": 1}\n'
    four_wrong = b'{"id": "4", "label": 1, "a": "x", "b": "x", "c": "x", "d": "x"}\n'
    (tmp_path / "samples.jsonl").write_bytes(ok1 + error + b"not json\n" + four_wrong + ok2 + b'{"id": "6", "lab')
    record = RunRecord.open(tmp_path, "toy", {"n": 1}, schema=schema, versions=lambda: {"v": "1"})
    try:
        assert [s["id"] for s in record.samples] == ["1", "5"]
        assert record.retried_errors == 1
        assert (tmp_path / "samples.jsonl").read_bytes() == ok1 + ok2
        assert (tmp_path / "samples.retried.jsonl").read_bytes() == error
        assert (tmp_path / "samples.rejected.jsonl").read_bytes() == b"not json\n" + four_wrong
        rejected = record.data["resume_rejected"]
        assert rejected["lines"] == 2
        assert [r.split(":")[0] for r in rejected["first_reasons"]] == ["line 3", "line 4"]
        assert sum(f"{k} is 'x'" in rejected["first_reasons"][1] for k in "abcd") == 3  # the first three problems
        record.add_sample({"id": "2", "label": 1, "a": 1, "b": 1, "c": 1, "d": 1})  # the retried one, answered
    finally:
        record.close()
    assert [s["id"] for s in read_samples(tmp_path / "samples.jsonl")] == ["1", "5", "2"]


def test_resume_with_only_errored_samples_moves_them_all_and_lists_at_most_ten_reasons(tmp_path):
    from mmsafety.records import RunRecord

    record = _open(tmp_path / "errors")
    record.close()
    lines = [f'{{"id": "{k}", "status": "error", "reason": "oom"}}\n'.encode() for k in range(3)]
    (tmp_path / "errors" / "samples.jsonl").write_bytes(b"".join(lines))
    record = _open(tmp_path / "errors")
    try:
        assert record.samples == [] and record.retried_errors == 3 and "resume_rejected" not in record.data
        assert (tmp_path / "errors" / "samples.jsonl").read_bytes() == b""
        assert (tmp_path / "errors" / "samples.retried.jsonl").read_bytes() == b"".join(lines)
    finally:
        record.close()

    record = _open(tmp_path / "bad")
    record.close()
    (tmp_path / "bad" / "samples.jsonl").write_bytes(b"".join(f"bad {k}\n".encode() for k in range(12)))
    record = RunRecord.open(tmp_path / "bad", "toy", {"n": 1}, versions=lambda: {"v": "1"})
    try:
        assert record.data["resume_rejected"]["lines"] == 12
        assert [r.split(":")[0] for r in record.data["resume_rejected"]["first_reasons"]] == [
            f"line {k}" for k in range(1, 11)]
    finally:
        record.close()


def test_a_previous_record_that_breaks_its_workloads_schema_or_lacks_a_config_hash_is_no_record(tmp_path):
    """Such a record is not resumed (a new run id, resumes 0), and a config hash that is missing is
    not read as a different config."""
    from mmsafety.record_schema import RecordSchema

    schema = RecordSchema.from_shapes("toy", metrics={"accuracy": float})
    for name, change in (("bad_metrics", {"metrics": {"accuracy": "high"}}), ("no_hash", {"config_sha256": None})):
        folder = tmp_path / name
        record = _open(folder, schema=schema)
        first = record.data["run_id"]
        record.close()
        data = json.loads((folder / "record.json").read_text())
        data.update(change)
        if change.get("config_sha256", "") is None:
            del data["config_sha256"]
        (folder / "record.json").write_text(json.dumps(data))
        record = _open(folder, schema=schema)
        try:
            assert record.data["run_id"] != first and record.data["timing"]["resumes"] == 0, name
        finally:
            record.close()
    # the same record with metrics that fit is resumed
    record = _open(tmp_path / "fine", schema=schema)
    record.update(metrics={"accuracy": 0.5})
    record.write()
    first = record.data["run_id"]
    record.close()
    record = _open(tmp_path / "fine", schema=schema)
    try:
        assert record.data["run_id"] == first and record.data["timing"]["resumes"] == 1
    finally:
        record.close()


def test_environment_reports_the_installed_versions_and_the_gpu(monkeypatch):
    import importlib.util
    import platform

    import torch
    import transformers

    from mmsafety.records import environment

    env = environment()
    assert env["python"] == platform.python_version() and env["platform"] == platform.platform()
    assert env["torch"] == torch.__version__ and env["transformers"] == transformers.__version__
    if importlib.util.find_spec("open_clip") is None:
        assert "open_clip" in env and env["open_clip"] is None
    else:
        import open_clip

        assert env["open_clip"] == open_clip.__version__
    assert "cuda" not in env and "gpu" not in env or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: {0: "GPU zero"}.get(index, f"GPU {index}"))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    env = environment()
    assert env["cuda"] == "12.4" and env["gpu"] == "GPU zero"


def test_current_umask_reads_it_without_setting_it(monkeypatch):
    """os.umask can only set the mask (a race with threads creating files); the value comes from
    /proc/self/status instead, and equals what the process has."""
    import os

    from mmsafety.records import current_umask

    previous = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError("current_umask called os.umask")

        monkeypatch.setattr(os, "umask", no_umask)
        assert current_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_update_refuses_a_wrong_type_naming_at_most_three_fields(tmp_path):
    record = _open(tmp_path)
    try:
        with pytest.raises(ValueError) as caught:
            record.update(model="m", spec="s", counts="c", seeds="x")
        named = [f for f in ("model", "spec", "counts", "seeds") if f"{f} is" in str(caught.value)]
        assert len(named) == 3 and "\n" not in str(caught.value)
    finally:
        record.close()


def test_the_written_record_counts_samples_by_status_and_times_the_run(tmp_path, monkeypatch):
    from mmsafety import records

    now = [1000.0]
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    record = _open(tmp_path)
    try:
        on_disk = json.loads((tmp_path / "record.json").read_text())
        assert on_disk["counts"] == {"ok": 0, "skipped": 0, "errors": 0} and on_disk["skipped_reasons"] == {}
        for sample in ({"id": "a"}, {"id": "b", "status": "ok"}, {"id": "c", "status": "error", "reason": "oom"},
                       {"id": "d", "status": "skipped", "reason": "unreadable image"},
                       {"id": "e", "status": "skipped", "reason": "unreadable image"}):
            record.add_sample(sample)
        now[0] = 1002.12345
        record.write("completed")
    finally:
        record.close()
    text = (tmp_path / "record.json").read_text(encoding="utf-8")
    on_disk = json.loads(text)
    assert on_disk["status"] == "completed"
    assert on_disk["counts"] == {"ok": 2, "skipped": 2, "errors": 1}
    assert on_disk["skipped_reasons"] == {"unreadable image": 2}
    assert on_disk["timing"]["started"] == 1000.0 and on_disk["timing"]["finished"] == 1002.12345
    assert on_disk["timing"]["seconds"] == 2.123  # to the millisecond
    assert text.count("\n") > 10  # indented for a person to read


def test_record_json_keeps_non_ascii_text_readable(tmp_path):
    record = _open(tmp_path, {"prompt": "Ça va ✓"})
    record.close()
    assert "Ça va ✓".encode("utf-8") in (tmp_path / "record.json").read_bytes()


def test_close_closes_the_samples_file_and_may_be_called_twice(tmp_path):
    import os

    record = _open(tmp_path)
    record.add_sample({"id": "a"})
    samples = (tmp_path / "samples.jsonl").resolve()

    def open_on_samples():
        return [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(samples)]

    assert open_on_samples()
    record.close()
    assert open_on_samples() == []
    record.close()


def test_atomic_write_creates_folders_and_writes_through_a_temp_file_the_next_job_can_clean_up(tmp_path, monkeypatch):
    """The temporary file sits beside the target (a rename across file systems is not atomic) and
    matches what `RunRecord` removes after a killed writer (`.*.tmp` in the run folder)."""
    import os

    from mmsafety import records

    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((Path(src), sorted(Path(dst).parent.glob(".*.tmp"))))
        real_replace(src, dst)

    monkeypatch.setattr(records.os, "replace", replace)
    target = tmp_path / "sweep" / "3" / "record.json"
    records.atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    (src, cleanable), = seen
    assert src.parent == target.parent and cleanable == [src] and src.name.startswith(".record.json.")
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


def test_current_umask_without_proc_falls_back_and_leaves_the_mask_as_it_was(monkeypatch):
    import os

    from mmsafety import records

    real_read_text = Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_read_text(self, *args, **kwargs)

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(Path, "read_text", no_proc)
        assert records.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still the process's mask
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_a_closed_record_can_be_opened_again(tmp_path):
    record = _open(tmp_path)
    record.add_sample({"id": "a"})
    record.close()
    with record:
        assert [s["id"] for s in record.samples] == ["a"]
        assert record.data["timing"]["resumes"] == 1


# -- visual_attacks/deploy.py ---------------------------------------------------------------------

def _pillow_round_trip(image, fmt, **options):
    import io

    from PIL import Image

    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.convert("RGB")


def test_deploy_image_is_what_pillow_gives_for_the_preset_and_png_passes_the_image_through():
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from visual_attacks.deploy import PNG, build_deploy

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    assert PNG.image(image) is image
    root = Path(__file__).resolve().parents[1] / "conf" / "deploy"
    jpeg = build_deploy(OmegaConf.load(root / "jpeg_75.yaml"))
    reference = _pillow_round_trip(image, "JPEG", quality=75, subsampling=2)  # Pillow's 4:2:0
    assert np.array_equal(np.asarray(jpeg.image(image)), np.asarray(reference))
    assert not np.array_equal(np.asarray(jpeg.image(image)), np.asarray(image))


def test_deploy_labels_tell_presets_their_variants_and_old_records_apart():
    from omegaconf import OmegaConf

    from visual_attacks.deploy import build_deploy, deploy_label

    root = Path(__file__).resolve().parents[1] / "conf" / "deploy"
    preset = build_deploy(OmegaConf.load(root / "jpeg_75.yaml")).spec()
    assert deploy_label(preset) == "jpeg_75"
    assert deploy_label(None) == "png" and deploy_label({}) == "png" and deploy_label("jpeg") == "png"
    assert deploy_label({"name": "mine", "steps": []}) == "mine"
    changed = {"name": "jpeg_75", "steps": [{**preset["steps"][0], "quality": 50}]}
    other = {"name": "jpeg_75", "steps": [{**preset["steps"][0], "quality": 40}]}
    labels = {deploy_label(preset), deploy_label(changed), deploy_label(other)}
    assert len(labels) == 3
    assert deploy_label(changed).startswith("jpeg_75") and "quality=50" in deploy_label(changed)
    own = {"name": "../etc/x", "steps": [{"kind": "jpeg", "quality": 75, "subsampling": "4:2:0"}]}
    assert deploy_label(own) != "../etc/x" and "quality=75" in deploy_label(own)  # not a preset's file


def test_downscale_matches_pillows_resize_keeps_one_pixel_and_refuses_factors_below_one():
    import numpy as np
    from PIL import Image

    from mmsafety.errors import ConfigError
    from visual_attacks.deploy import build_deploy

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    for resample, pil in (("nearest", Image.Resampling.NEAREST), ("box", Image.Resampling.BOX)):
        step = {"kind": "downscale", "factor": 4, "resample": resample}
        got = build_deploy({"name": "d", "steps": [step]}).image(image)
        assert np.array_equal(np.asarray(got), np.asarray(image.resize((8, 5), pil)))  # round(30/4), round(20/4)
    tiny = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    assert build_deploy({"name": "d", "steps": [{"kind": "downscale", "factor": 8}]}).image(tiny).size == (1, 1)
    assert build_deploy({"name": "d", "steps": [{"kind": "downscale", "factor": 1}]}).image(image).size == (30, 20)
    for factor in (0.5, True, "2"):
        with pytest.raises(ConfigError, match="factor"):
            build_deploy({"name": "d", "steps": [{"kind": "downscale", "factor": factor}]})
    with pytest.raises(ConfigError, match="downscale"):
        build_deploy({"name": "d", "steps": [{"kind": "downscale", "resample": "sharp"}]})


def test_resize_longest_keeps_one_pixel_on_the_short_side_as_pillow_resizes():
    import numpy as np
    from PIL import Image

    from visual_attacks.deploy import build_deploy

    rng = np.random.default_rng(2)
    for shape, expected in (((100, 1, 3), (1, 10)), ((1, 100, 3), (10, 1)), ((40, 20, 3), (5, 10))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        step = {"kind": "resize_longest", "size": 10, "resample": "nearest"}
        got = build_deploy({"name": "r", "steps": [step]}).image(image)
        assert np.array_equal(np.asarray(got), np.asarray(image.resize(expected, Image.Resampling.NEAREST)))


def test_samples_keep_non_ascii_text_and_write_paths_as_text_in_process(tmp_path):
    record = _open(tmp_path)
    try:
        record.add_sample({"id": "a", "text": "Ça va ✓", "image": Path("/m/x.png")})
    finally:
        record.close()
    line = (tmp_path / "samples.jsonl").read_bytes()
    assert "Ça va ✓".encode("utf-8") in line
    assert json.loads(line) == {"id": "a", "text": "Ça va ✓", "image": "/m/x.png"}


def test_environment_without_open_clip_says_so(monkeypatch):
    import sys

    from mmsafety.records import environment

    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    env = environment()
    assert "open_clip" in env and env["open_clip"] is None


def test_jpeg_and_resize_checks_accept_their_whole_range_and_jpeg_uses_the_named_subsampling():
    import numpy as np
    from PIL import Image

    from mmsafety.errors import ConfigError
    from visual_attacks.deploy import build_deploy

    def steps(**step):
        return {"name": "d", "steps": [step]}

    for quality in (1, 100):
        build_deploy(steps(kind="jpeg", quality=quality))
    for quality in (0, 101, 75.0, "75"):
        with pytest.raises(ConfigError, match="quality"):
            build_deploy(steps(kind="jpeg", quality=quality))
    with pytest.raises(ConfigError, match="4:1:1"):
        build_deploy(steps(kind="jpeg", subsampling="4:1:1"))
    build_deploy(steps(kind="resize_longest", size=1))
    for size in (0, True, 2.5):
        with pytest.raises(ConfigError, match="size"):
            build_deploy(steps(kind="resize_longest", size=size))
    with pytest.raises(ConfigError, match="resize_longest"):
        build_deploy(steps(kind="resize_longest", resample="sharp"))
    with pytest.raises(ConfigError, match="enlarge"):
        build_deploy(steps(kind="resize_longest", enlarge="yes"))
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    got = build_deploy(steps(kind="jpeg", quality=90, subsampling="4:4:4")).image(image)
    reference = _pillow_round_trip(image, "JPEG", quality=90, subsampling=0)
    assert np.array_equal(np.asarray(got), np.asarray(reference))


def test_a_previous_record_is_the_same_job_by_its_hash_or_by_its_upgraded_earlier_layout():
    """`same_job`: the recorded hash alone suffices; a record of the earlier layout (a config written by the
    code of commit 757700f, tests/fixtures/layout1) is the job its upgraded config hashes to and no other;
    a config that is not a mapping is no job."""
    from mmsafety.config_migration import upgrade_config
    from mmsafety.records import config_sha256, same_job

    old = next(c for c in json.loads((Path(__file__).parent / "fixtures" / "layout1" / "configs.json").read_text())
               if c["app"] == "attack")
    today = config_sha256(upgrade_config(old["config"]))
    assert today != old["config_sha256"]  # the layout change moved the hash
    assert same_job({"config_sha256": "abc"}, "abc")  # no config needed when the hash matches
    assert same_job({"config_sha256": old["config_sha256"], "config": old["config"]}, today)
    assert not same_job({"config_sha256": old["config_sha256"], "config": old["config"]}, "another")
    assert not same_job({"config_sha256": "abc", "config": "not a mapping"}, "def")
    assert not same_job({"config": old["config"]}, old["config_sha256"])  # its own old hash is not today's job



def test_another_workload_s_run_in_the_folder_is_refused_not_overwritten(tmp_path):
    """An attack pointed at a GOAT-Bench run's folder: that record is read by the record's own (core) rules,
    not the attack's schema, so it is the other job it is and the attack refuses the folder. Judged by the
    attack's schema its GOAT fields would count as damage, the record as no record, and the run overwritten."""
    from mmsafety.errors import UserError
    from mmsafety.record_kinds import schema_of
    from mmsafety.records import RunRecord

    with RunRecord.open(tmp_path, "goat_bench", {"task": "sarcasm"}, versions=lambda: {}) as goat:
        goat.update(spec={"workload": "goat_bench", "tasks": ["sarcasm"], "scoring": "logprob"},
                    metrics={"per_task": {"sarcasm": {"n": 1, "accuracy": 100.0}}})
        goat.add_sample({"task": "sarcasm", "id": "1", "status": "ok", "label": 1, "pred": 1, "correct": True})
        goat.write("completed")
    before = (tmp_path / "record.json").read_bytes()
    with pytest.raises(UserError, match="holds a run with a different config"):
        RunRecord.open(tmp_path, "visual_attack", {"attack": "pgd"}, schema=schema_of("visual_attack"), versions=lambda: {})
    assert (tmp_path / "record.json").read_bytes() == before
