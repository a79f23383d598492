"""Runs that stop and go on: SIGKILL and Ctrl-C mid-run, ``--resume`` to the same samples.parquet
as an uninterrupted run, determinism, write failures, and folders that already hold a run."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from auditcam import cli
from auditcam.config import AuditSettings
from auditcam.run.records import samples_schema
from auditcam.run.shards import salvage

# A demo TinyCNN with seeded weights that logs every batch it sees and can be slowed down, so a
# signal lands mid-run at a known point.
SLOW_MODEL = """
import os, time
import torch
from auditcam.demo.models import PREPROCESSING, TinyCNN
from auditcam.demo.synthetic import CLASSES


class Slow(TinyCNN):
    def forward(self, x):
        log = os.environ.get("AUDITCAM_TEST_LOG")
        if log and len(x) > 1:
            with open(log, "a") as fh:
                fh.write(f"{len(x)}\\n")
        time.sleep(float(os.environ.get("AUDITCAM_TEST_DELAY", "0")))
        return super().forward(x)


def slow(num_classes=3):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Slow(num_classes)


slow.preprocessing = PREPROCESSING
slow.classes = CLASSES
"""
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """12 samples on disk, the slow model, and the arguments of an audit in 6 batches of 2, 3 shards."""
    from auditcam.demo import write_split
    from auditcam.demo.synthetic import make_split

    root = tmp_path_factory.mktemp("runs")
    manifest = write_split(make_split(12, agreement={"A": 0.0, "B": 0.0}, seed=5), root / "data")
    (root / "slow.py").write_text(SLOW_MODEL)
    common = ["--model", f"{root / 'slow.py'}:slow", "--data", str(manifest), "--batch-size", "2"]
    common += ["--shard-size", "4", "--workers", "0", "--insufficient-data", "skip", "--no-progress"]
    return root, common


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted run (in this process)."""
    root, common = setup
    assert cli.main(["audit", *common, "--out", str(root / "reference")]) == cli.EXIT_PASS
    return root / "reference" / "samples.parquet"


def _start(common, out: Path, log: Path, delay: float, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUDITCAM_TEST_LOG": str(log), "AUDITCAM_TEST_DELAY": str(delay)}
    command = [sys.executable, "-m", "auditcam", "audit", *common, "--out", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def _saved(out: Path) -> int:
    """Samples kept in the shards and journals of ``out`` (one method, 4 samples a shard)."""
    schema = samples_schema(("site",), shard=True)
    journals = (out / "shards").glob("shard-*.arrows")
    return 4 * len(list((out / "shards").glob("shard-*.parquet"))) + sum(
        batch.num_rows for journal in journals for batch in salvage(journal, schema)
    )


def _same_samples(path: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(reference))
    assert path.read_bytes() == reference.read_bytes()


def test_sigkill_loses_at_most_the_batch_in_flight_and_resume_completes_the_same_run(setup, reference, tmp_path):
    _root, common = setup
    out, log = tmp_path / "out", tmp_path / "batches.log"
    proc = _start(common, out, log, delay=0.4)
    _wait_for(out / "shards" / "shard-000001.parquet", proc)  # chunks 0 and 1 done, chunk 2 under way
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    explained = len(log.read_text().split())  # batches the model has seen, the last one maybe in flight
    assert _saved(out) >= 2 * (explained - 1) and _saved(out) >= 8
    assert json.loads((out / "run.json").read_text())["state"] == "explaining"
    assert not (out / "samples.parquet").exists()

    argv = ["audit", *common, "--out", str(out)]
    assert cli.main(argv) == cli.EXIT_INPUT  # without --resume: refused, never mixed
    assert cli.main([*argv, "--resume"]) == cli.EXIT_PASS
    _same_samples(out / "samples.parquet", reference)
    assert not (out / "shards").exists() and json.loads((out / "run.json").read_text())["state"] == "complete"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["run"]["resumed_at"] >= 4


def test_ctrl_c_saves_what_it_has_and_says_how_to_resume(setup, reference, tmp_path, monkeypatch, capsys):
    """A real SIGINT, sent to this process once the first shard is written (4 slow batches remain)."""
    _root, common = setup
    out = tmp_path / "out"
    monkeypatch.setenv("AUDITCAM_TEST_DELAY", "0.3")

    finished = threading.Event()

    def interrupt_after_first_shard() -> None:
        while not (out / "shards" / "shard-000000.parquet").exists():
            if finished.wait(0.005):
                return  # the run ended without the shard: never signal pytest itself
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_after_first_shard)
    watcher.start()
    argv = ["audit", *common, "--out", str(out)]
    try:
        code = cli.main(argv)
    finally:
        finished.set()
        watcher.join()
    assert code == cli.EXIT_INTERRUPTED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"samples are saved in {out}; resume with: auditcam audit" in line
    assert line.startswith(f"auditcam: interrupted: {_saved(out)} of 12 samples")
    assert line.endswith(f"--out {out} --resume")
    monkeypatch.delenv("AUDITCAM_TEST_DELAY")
    assert cli.main([*argv, "--resume"]) == cli.EXIT_PASS
    _same_samples(out / "samples.parquet", reference)


def test_two_runs_give_identical_samples_also_when_workers_decode(setup, reference, tmp_path):
    """Determinism on the CPU: the same inputs give the same bytes, whether the samples are
    decoded in this process or by two worker processes while the model runs."""
    _root, common = setup
    assert cli.main(["audit", *common, "--out", str(tmp_path / "again")]) == cli.EXIT_PASS
    _same_samples(tmp_path / "again" / "samples.parquet", reference)
    assert cli.main(["audit", *common, "--workers", "2", "--out", str(tmp_path / "workers")]) == cli.EXIT_PASS
    _same_samples(tmp_path / "workers" / "samples.parquet", reference)


def test_a_failed_write_mid_run_is_one_line_and_keeps_the_finished_batches(setup, reference, tmp_path):
    """Files may grow to 12 kB (RLIMIT_FSIZE): the journal of the one 12-sample chunk fills up mid-run."""
    _root, common = setup
    out = tmp_path / "out"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    argv = [*common, "--shard-size", "12"]
    proc = _start(argv, out, tmp_path / "log", delay=0, preexec_fn=limited)
    _stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == cli.EXIT_INPUT, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"auditcam: error: cannot write {out / 'shards' / 'shard-000000.arrows'} (")
    assert "File too large" in line and line.endswith("then rerun with --resume")
    kept = salvage(out / "shards" / "shard-000000.arrows", samples_schema(("site",), shard=True))
    assert 1 <= len(kept) < 6 and all(batch.num_rows == 2 for batch in kept)
    assert cli.main(["audit", *argv, "--out", str(out), "--resume"]) == cli.EXIT_PASS
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"), pd.read_parquet(reference))


def test_an_output_that_is_a_file_is_one_line_exit_2(setup, tmp_path, capsys):
    _root, common = setup
    (tmp_path / "out").write_text("not a folder")
    assert cli.main(["audit", *common, "--out", str(tmp_path / "out")]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"auditcam: error: --out {tmp_path / 'out'}: cannot write there (it is a file, not a folder); "
        "choose a writable folder"
    ]


def test_a_finished_run_is_refused_then_analysed_again_with_resume(setup, reference, tmp_path, capsys):
    _root, common = setup
    out = reference.parent
    assert cli.main(["audit", *common, "--out", str(out)]) == cli.EXIT_INPUT
    assert "already holds a finished audit" in capsys.readouterr().err
    before = reference.read_bytes()
    argv = ["audit", *common, "--out", str(out), "--resume", "--min-subject-share", "0.99", "--min-group-size", "5"]
    assert cli.main(argv) == cli.EXIT_FAIL  # the new check fails on the same samples
    assert reference.read_bytes() == before
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["checks"] if c["outcome"] == "fail"] == ["mean_subject_share"]


@pytest.mark.parametrize(
    ("change", "difference"),
    [(["--target", "label"], "target: 'pred' then, 'label' now"), (["--amp"], "amp: None then, 'bfloat16' now")],
)
def test_resume_refuses_another_configuration(setup, reference, capsys, change, difference):
    _root, common = setup
    argv = ["audit", *common, *change, "--out", str(reference.parent), "--resume"]
    assert cli.main(argv) == cli.EXIT_INPUT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"was made with another configuration ({difference})" in line


def test_the_gallery_picked_from_the_merged_samples_matches_the_one_kept_while_explaining(small_dataset, tmp_path):
    """A resumed or distributed run re-explains its gallery samples (they may come from another
    process); it must show the same samples, with the same heatmaps, as the gallery kept in the loop."""
    import numpy as np

    from auditcam import LabelledDataset, audit
    from auditcam.cam import Explainer
    from auditcam.demo.models import tiny_cnn
    from auditcam.run.gallery import pick_gallery as _gallery

    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tiny_cnn()
    result = audit(
        model, dataset, AuditSettings(gallery_size=3, batch_size=4), run_dir=tmp_path / "run", progress=False
    )
    with Explainer(model) as explainer:
        again = _gallery(result.samples_path, explainer, dataset, ["gradcam"], 3, 4, torch.device("cpu"), {})
    for kept, redone in (
        (result.gallery.background_reliant, again.background_reliant),
        (result.gallery.subject_focused, again.subject_focused),
    ):
        assert [e.record for e in kept] == [e.record for e in redone] and len(kept) == 3
        for a, b in zip(kept, redone, strict=True):
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
    ok = result.samples[result.samples["status"] == "ok"]
    shares = sorted(ok["subject_share"])
    assert [e.record["subject_share"] for e in result.gallery.background_reliant] == shares[:3]
