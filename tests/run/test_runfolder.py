"""The run folder: a folder holding a run or results is never silently mixed with a new run."""

from __future__ import annotations

import pytest
import torch

from auditcam.cli import PARAMETER_FLAGS
from auditcam.errors import InputError
from auditcam.run.runfolder import (
    COMPLETE,
    FINISHED_RUN,
    UNFINISHED_RUN,
    RunFolder,
    dataset_identity,
    differences,
    new_manifest,
    open_run,
    state_sha256,
)

FINGERPRINT = {"methods": ["gradcam"], "model": {"state_sha256": "a" * 64}, "batch_size": 4}


def _run(tmp_path, state=None) -> RunFolder:
    folder = RunFolder(tmp_path / "out")
    folder.create()
    manifest = new_manifest(FINGERPRINT, {"n_samples": 12, "batch_size": 4, "shard_size": 4})
    folder.write_manifest({**manifest, "state": state or manifest["state"]})
    return folder


def test_an_empty_or_missing_folder_starts_a_run(tmp_path):
    assert open_run(RunFolder(tmp_path / "new"), FINGERPRINT, resume=False, overwrite=False) is None
    assert open_run(RunFolder(tmp_path / "new"), FINGERPRINT, resume=True, overwrite=False) is None


def test_an_unfinished_run_is_refused_without_resume(tmp_path):
    folder = _run(tmp_path)
    (folder.shards / "shard-000000.parquet").write_bytes(b"x")
    with pytest.raises(InputError) as error:
        open_run(folder, FINGERPRINT, resume=False, overwrite=False)
    assert str(error.value) == UNFINISHED_RUN.format(path=folder.path, done=1, total=3)
    assert error.value.parameter == "run_dir"
    assert error.value.render(PARAMETER_FLAGS) == (
        f"--out {folder.path} holds an unfinished audit (1 of 3 shards written); "
        "pass --resume to continue it, or --overwrite to start again"
    )
    assert open_run(folder, FINGERPRINT, resume=True, overwrite=False)["fingerprint"] == FINGERPRINT


def test_a_finished_run_is_refused_without_resume(tmp_path):
    folder = _run(tmp_path, state=COMPLETE)
    with pytest.raises(InputError) as error:
        open_run(folder, FINGERPRINT, resume=False, overwrite=False)
    assert str(error.value) == FINISHED_RUN.format(path=folder.path)
    assert "already holds a finished audit; pass --overwrite to replace it, or --resume" in error.value.render(
        PARAMETER_FLAGS
    )


def test_resume_refuses_another_configuration_naming_what_changed(tmp_path):
    folder = _run(tmp_path)
    changed = {**FINGERPRINT, "methods": ["hirescam"], "model": {"state_sha256": "b" * 64}}
    with pytest.raises(InputError) as error:
        open_run(folder, changed, resume=True, overwrite=False)
    message = error.value.render(PARAMETER_FLAGS)
    assert error.value.parameter == "resume"
    assert message.startswith(f"--resume: the run in {folder.path} was made with another configuration (")
    assert "methods: ['gradcam'] then, ['hirescam'] now" in message
    assert "model.state_sha256: 'aaaaaaaaaaaaaaa… then, 'bbbbbbbbbbbbbbb… now" in message
    assert "\n" not in message


def test_results_of_an_older_run_without_manifest_are_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("old")
    with pytest.raises(InputError, match=r"already holds audit results \(report.html\)"):
        open_run(RunFolder(out), FINGERPRINT, resume=True, overwrite=False)


def test_overwrite_deletes_only_the_runs_files(tmp_path):
    folder = _run(tmp_path, state=COMPLETE)
    (folder.path / "report.html").write_text("old")
    (folder.path / "notes.txt").write_text("mine")
    (folder.shards / "shard-000000.parquet").write_bytes(b"x")
    assert open_run(folder, FINGERPRINT, resume=False, overwrite=True) is None
    assert sorted(p.name for p in folder.path.iterdir()) == ["notes.txt"]


def test_a_file_in_place_of_the_folder_is_an_error(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(InputError, match="it is a file, not a folder"):
        open_run(RunFolder(tmp_path / "out"), FINGERPRINT, resume=False, overwrite=False)


def test_an_unreadable_manifest_is_an_error(tmp_path):
    folder = _run(tmp_path)
    folder.manifest_path.write_text("{not json")
    with pytest.raises(InputError, match=r"run.json cannot be read .*pass `overwrite`"):
        open_run(folder, FINGERPRINT, resume=True, overwrite=False)


def test_state_sha256_sees_every_weight(tiny_net):
    before = state_sha256(tiny_net)
    assert before == state_sha256(tiny_net)
    with torch.no_grad():
        tiny_net.fc.bias[0] += 1e-6
    assert state_sha256(tiny_net) != before


def test_dataset_identity_hashes_the_rows(small_dataset):
    from auditcam.data import LabelledDataset

    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    first = dataset_identity(dataset)
    assert first["n_samples"] == 12 and first["attributes"] == ["site"]
    rows = manifest.read_text().splitlines()
    rows[1] = rows[1].replace(",A", ",B") if rows[1].endswith(",A") else rows[1].replace(",B", ",A")
    manifest.write_text("\n".join(rows) + "\n")
    changed = dataset_identity(LabelledDataset.from_manifest(manifest, classes=classes))
    assert [d.split(":")[0] for d in differences(first, changed)] == ["rows_sha256"]
