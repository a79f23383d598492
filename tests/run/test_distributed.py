"""torchrun: two processes (gloo, CPU) explain disjoint shares; rank 0 merges the same samples a
single process gives. The control protocol's stop rule is checked without processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from auditcam import cli
from auditcam.run.distributed import Group, PeerStopped, _decide

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def weights(tmp_path):
    from safetensors.torch import save_file

    from auditcam.demo.models import TinyCNN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = TinyCNN()
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def test_torchrun_with_two_processes_merges_the_samples_of_one(small_dataset, weights, tmp_path):
    from auditcam.demo import MODEL_SPEC

    manifest, _classes = small_dataset
    common = ["audit", "--model", MODEL_SPEC, "--weights", str(weights), "--data", str(manifest)]
    common += ["--batch-size", "2", "--shard-size", "2", "--workers", "0", "--no-progress"]
    common += ["--insufficient-data", "skip"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, "-m", "auditcam", *common, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("PASSED: report") == 1  # rank 0 reports, rank 1 stays quiet
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["meta"]["run"]["processes"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): the same kernels, the same bits
    try:
        assert cli.main([*common, "--out", str(tmp_path / "one")]) == cli.EXIT_PASS
    finally:
        torch.set_num_threads(threads)
    two = pd.read_parquet(tmp_path / "two" / "samples.parquet")
    one = pd.read_parquet(tmp_path / "one" / "samples.parquet")
    pd.testing.assert_frame_equal(two, one)
    assert len(one) == 12


def test_a_rank_that_stops_decides_every_ranks_exit_code():
    # rank 1 failed (2) while rank 0 was still gathering the "explained" phase
    assert _decide([("explained", None), ("stop", (2, "bad input"))]) == (1, 2, "bad input")
    # everyone at the end: rank 0's verdict (1, a check failed) wins over the others' 0
    assert _decide([("stop", (1, "")), ("stop", (0, ""))])[1] == 1
    # an error anywhere beats a verdict
    assert _decide([("stop", (0, "")), ("stop", (3, "internal error"))])[:2] == (1, 3)


def test_a_group_of_one_needs_no_messages():
    group = Group()
    assert group.exchange("plan", {"x": 1}) == [{"x": 1}] and group.leader
    assert group.stop(2) == 2


def test_peer_stopped_names_the_rank_and_code():
    error = PeerStopped(1, 2, "cannot write there")
    assert str(error) == "rank 1 stopped the run (exit code 2): cannot write there" and error.code == 2
