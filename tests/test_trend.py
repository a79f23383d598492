"""``auditcam trend`` and :func:`auditcam.trend`: checkpoints of one model on the same samples."""

from __future__ import annotations

import hashlib
import importlib
import json

import pytest
import torch
from safetensors.torch import save_file

from auditcam import cli
from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.data import LabelledDataset
from auditcam.demo import MODEL_SPEC
from auditcam.demo.models import PREPROCESSING, TinyCNN
from auditcam.demo.synthetic import CLASSES
from auditcam.errors import InputError, Interrupted
from auditcam.result import Trend
from auditcam.trend import find_checkpoints, trend

trend_module = importlib.import_module("auditcam.trend")  # the package attribute is the function


def _overall(summary, statistic):
    return [c["statistics"]["overall"]["all"][statistic] for c in summary["checkpoints"]]


@pytest.mark.slow
def test_the_background_reliance_rises_over_shortcut_training_with_intervals(trend_run):
    _, out, _, _ = trend_run
    summary = json.loads((out / "summary.json").read_text())
    reliance = _overall(summary, "background_reliant_rate")
    values = [e["value"] for e in reliance]
    assert values == sorted(values) and values[0] < values[1] < values[2]
    for e in reliance:
        assert e["ci"][0] <= e["value"] <= e["ci"][1] and e["n"] == 48
    assert reliance[0]["ci"][1] < reliance[-1]["ci"][0]  # the first and the last intervals do not overlap
    (span,) = [
        c
        for c in summary["changes"]
        if (c["from"], c["to"], c["dimension"], c["statistic"]) == (0, 2, "overall", "background_reliant_rate")
    ]
    assert span["direction"] == "rose" and span["change"] == "worsened" and span["delta_ci"][0] > 0
    assert span["delta"] == pytest.approx(values[2] - values[0])
    assert {(c["from"], c["to"]) for c in summary["changes"]} == {(0, 1), (1, 2), (0, 2)}
    shares = [e["value"] for e in _overall(summary, "border_share_mean")]  # mask-free: measured at every checkpoint
    assert all(share is not None for share in shares)
    assert set(summary["checkpoints"][0]["statistics"]) >= {"overall", "class", "site"}


@pytest.mark.slow
def test_the_summary_lists_every_checkpoint_with_its_weights_sha256_step_and_checks(trend_run, shortcut_checkpoints):
    code, out, _, _ = trend_run
    _, weights = shortcut_checkpoints
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "trend" and summary["method"] == "gradcam" and summary["n_samples"] == 48
    entries = summary["checkpoints"]
    assert [e["step"] for e in entries] == [0, 3, 6]  # from --step 'epoch(\d+)'
    assert [e["name"] for e in entries] == ["epoch0", "epoch3", "epoch6"]
    for entry, path in zip(entries, weights, strict=True):
        assert entry["weights"] == str(path)
        assert entry["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert [c["name"] for c in entry["checks"]] == ["background_reliant_rate"]  # --no-strategies
        inner = json.loads((out / entry["folder"] / "summary.json").read_text())
        assert inner["checks"] == entry["checks"]
        assert inner["meta"]["model"]["weights_sha256"] == entry["weights_sha256"]
        assert (out / entry["folder"] / "report.html").is_file()
    # the checks are decided on the last checkpoint: the first passed the 0.5 ceiling, the last did not
    assert [e["passed"] for e in entries] == [True, False, False]
    assert summary["passed"] is False and summary["decided_on"] == "epoch6" and code == cli.EXIT_FAIL
    junit = (out / "junit.xml").read_text()
    assert 'failures="1"' in junit and "0.5" in junit


@pytest.mark.slow
def test_the_trend_bundle_reads_back_and_renders_again_byte_identical(trend_run, capsys):
    _, out, _, _ = trend_run
    written = {name: (out / name).read_bytes() for name in ("trend.html", "junit.xml")}
    again = Trend.read(out)
    assert again.steps == (0, 3, 6) and not again.passed
    assert again.to_dict() == json.loads((out / "summary.json").read_text())
    assert cli.main(["report", str(out)]) == cli.EXIT_PASS
    assert "FAILED" in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in written} == written


def _argv(manifest, out, *weights):
    return ["trend", "--model", MODEL_SPEC, "--data", str(manifest), "--out", str(out), "--no-progress"] + [
        arg for path in weights for arg in ("--weights", str(path))
    ]


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_exits_2_naming_it_before_any_audit(
    shortcut_checkpoints, tmp_path, monkeypatch, capsys
):
    manifest, weights = shortcut_checkpoints
    with torch.random.fork_rng(devices=[]):
        wrong = tmp_path / "four-classes.safetensors"
        save_file(TinyCNN(num_classes=4).state_dict(), str(wrong))
    audited = []
    monkeypatch.setattr(trend_module, "audit", lambda *a, **k: audited.append(1))
    assert cli.main(_argv(manifest, tmp_path / "out", weights[0], weights[1], wrong)) == cli.EXIT_INPUT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(wrong) in line and "does not match the architecture" in line and "classifier.weight" in line
    assert not audited and not (tmp_path / "out").exists()


def test_a_glob_that_matches_nothing_or_a_missing_file_exits_2(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    argv = _argv(manifest, tmp_path / "out", tmp_path / "ckpts" / "*.pt")
    assert cli.main(argv) == cli.EXIT_INPUT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"--weights '{tmp_path / 'ckpts' / '*.pt'}': matches no file")
    assert cli.main(_argv(manifest, tmp_path / "out", tmp_path / "a.pt")) == cli.EXIT_INPUT
    assert f"--weights {tmp_path / 'a.pt'}: file not found" in capsys.readouterr().err


def test_one_checkpoint_or_steps_out_of_order_are_refused_before_any_work(tmp_path):
    one = tmp_path / "a.pt"
    one.write_bytes(b"")
    with pytest.raises(InputError, match=r"^`checkpoints`: a trend needs at least two checkpoints, got 1$"):
        trend(TinyCNN(), [], [one])
    with pytest.raises(InputError, match=r"^`steps` must increase with the checkpoints' order, got \[5, 5\]$"):
        trend(TinyCNN(), [], [one, one], steps=[5, 5])


def test_checkpoints_are_ordered_by_name_with_numbers_as_numbers_or_by_step(tmp_path):
    for name in ("run-e10.pt", "run-e9.pt", "run-e100.pt", "other.pt"):
        (tmp_path / name).write_bytes(b"")
    by_name = find_checkpoints([str(tmp_path / "run-*.pt")])
    assert [(p.name, s) for p, s in by_name] == [("run-e9.pt", 0), ("run-e10.pt", 1), ("run-e100.pt", 2)]
    both = find_checkpoints([tmp_path / "run-e9.pt", str(tmp_path / "run-e*.pt")], step=r"e(\d+)\.pt")
    assert [(p.name, s) for p, s in both] == [("run-e9.pt", 9), ("run-e10.pt", 10), ("run-e100.pt", 100)]
    with pytest.raises(InputError, match=r"^--step 'e\(\[0-9\]\)': .*run-e10\.pt and .*run-e100\.pt both have step 1$"):
        find_checkpoints([str(tmp_path / "run-*.pt")], step="e([0-9])")
    with pytest.raises(InputError, match=r"finds no step number in .*other\.pt"):
        find_checkpoints([str(tmp_path / "*.pt")], step=r"e(\d+)")
    with pytest.raises(InputError, match=r"^--step '\(': not a regular expression"):
        find_checkpoints([str(tmp_path / "*.pt")], step="(")


@pytest.mark.slow
def test_resume_after_a_checkpoint_failed_midway_reuses_the_finished_ones(shortcut_checkpoints, tmp_path, monkeypatch):
    manifest, weights = shortcut_checkpoints
    dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES, preprocessing=PREPROCESSING)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = TinyCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = AuditSettings(batch_size=8, shard_size=8, gallery_size=0, featuremap_channels=0, strategies=False)
    options = {
        "checks": Checks(max_background_reliant_rate=0.5),
        "analysis": AnalysisOptions(bootstrap=100, min_group_size=5),
        "run_dir": tmp_path / "out",
        "progress": False,
    }
    backwards = weights[::-1]  # end, middle, start: the verdict is the last checkpoint's (start) alone
    real, calls = trend_module.audit, []

    def interrupted_in_the_third(*args, **kwargs):
        calls.append(kwargs["run_dir"])
        if len(calls) < 3:
            return real(*args, **kwargs)
        read = LabelledDataset.__getitem__

        def stop_at_24(self, index):
            if index >= 24:
                raise KeyboardInterrupt
            return read(self, index)

        with monkeypatch.context() as patch:
            patch.setattr(LabelledDataset, "__getitem__", stop_at_24)
            return real(*args, **kwargs)

    monkeypatch.setattr(trend_module, "audit", interrupted_in_the_third)
    with pytest.raises(Interrupted) as stopped:
        trend(model, dataset, backwards, settings, **options)
    assert (stopped.value.done, stopped.value.folder) == (24, tmp_path / "out" / "checkpoints" / "epoch0")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # restored after the error
    runs = [json.loads((tmp_path / "out" / "checkpoints" / n / "run.json").read_text()) for n in ("epoch6", "epoch3")]
    assert [r["state"] for r in runs] == ["complete", "complete"]

    monkeypatch.setattr(trend_module, "audit", real)
    result = trend(model, dataset, backwards, settings, resume=True, **options)
    assert [r.meta["run"]["resumed_at"] for r in result.results] == [48, 48, 24]  # nothing explained twice
    again = [json.loads((tmp_path / "out" / "checkpoints" / n / "run.json").read_text()) for n in ("epoch6", "epoch3")]
    assert [r["created"] for r in again] == [r["created"] for r in runs]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert [r.passed for r in result.results] == [False, False, True] and result.passed
    result.write(tmp_path / "out", formats=["junit"])
    read = Trend.read(tmp_path / "out")
    assert read.passed and read.steps == (0, 1, 2)  # the positions, without steps
    assert 'failures="0"' in (tmp_path / "out" / "junit.xml").read_text()
    with pytest.raises(InputError, match="already holds results"):
        trend(model, dataset, backwards, settings, **options)


def test_the_trend_page_escapes_names_and_groups(tmp_path):
    from auditcam.result import Checkpoint
    from tests.htmlcheck import assert_self_contained, parse_page
    from tests.records import audit_result, samples

    frame = samples({"<script>alert(1)</script>": 40, "light": 40})
    options = AnalysisOptions(bootstrap=100)
    results = [audit_result(frame, Checks(), options, name=f"<b>step{i}</b>") for i in range(2)]
    names = ["<i>first</i>", "<i>second</i>"]
    found = [Checkpoint(name, i, f"{name}.pt", "0" * 64, f"checkpoints/c{i}") for i, name in enumerate(names)]
    html = Trend.of(found, results, "<b>model</b>").write(tmp_path)["trend.html"].read_text(encoding="utf-8")
    parse_page(html)
    assert_self_contained(html)  # the one script is ours, allowed by its hash
    assert html.lower().count("<script") == 1 and "<b>" not in html and "<i>" not in html
    assert "&lt;i&gt;second&lt;/i&gt;" in html and "&lt;b&gt;model&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
