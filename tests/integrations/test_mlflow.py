import json

import pytest

from auditcam import cli

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # creating a SQLite tracking store runs MLflow's migrations


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("auditcam")
    return client, client.search_runs([experiment.experiment_id])


def test_an_audit_is_one_mlflow_run_read_back_with_mlflows_client(audit_argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # artifacts go to ./mlruns beside the store
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    code = cli.main([*audit_argv, "--log", f"mlflow:{uri}", "--min-subject-share", "0.9"])
    assert code == cli.EXIT_FAIL
    assert "warning" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    client, (run,) = _runs(uri)
    assert run.data.tags["auditcam.verdict"] == "failed"
    assert run.data.params["target"] == "pred" and run.data.params["model.spec"] == summary["meta"]["model"]["spec"]
    assert any(check["value"] is None for check in summary["checks"])  # location_shortcut: not applicable
    for check in summary["checks"]:
        if check["value"] is None:  # not measured: never logged as a number
            assert not {f"check/{check['name']}/{end}" for end in ("value", "ci_low", "ci_high")} & set(
                run.data.metrics
            )
            continue
        assert run.data.metrics[f"check/{check['name']}/value"] == pytest.approx(check["value"])
        assert run.data.metrics[f"check/{check['name']}/ci_low"] == pytest.approx(check["ci"][0])
        assert run.data.metrics[f"check/{check['name']}/ci_high"] == pytest.approx(check["ci"][1])
    overall = summary["aggregates"]["gradcam"]["overall"]
    assert run.data.metrics["overall/subject_share_mean"] == pytest.approx(overall["subject_share_mean"])
    for cls, slice_ in summary["aggregates"]["gradcam"]["by_class"].items():
        assert run.data.metrics[f"class/{cls}/accuracy"] == pytest.approx(slice_["accuracy"])
    for group, slice_ in summary["aggregates"]["gradcam"]["by_group"]["site"].items():
        assert run.data.metrics[f"group/site/{group}/focus_lift_mean"] == pytest.approx(slice_["focus_lift_mean"])
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert names == {"report.html", "summary.json", "junit.xml"}


def test_a_tracker_that_refuses_the_write_costs_one_warning_never_the_audit(audit_argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'a file' / 'mlflow.db'}"
    code = cli.main([*audit_argv, "--log", f"mlflow:{uri}"])
    assert code == (cli.EXIT_PASS if json.loads((tmp_path / "out" / "summary.json").read_text())["passed"] else 1)
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and uri in lines[0] and str(tmp_path / "out") in lines[0]
    assert (tmp_path / "out" / "report.html").is_file()


def test_a_trend_is_one_run_with_each_statistic_at_each_checkpoints_step(trend_run):
    _, out, uri, _ = trend_run
    summary = json.loads((out / "summary.json").read_text())
    client, (run,) = _runs(uri)
    assert run.data.tags["auditcam.verdict"] == "failed"
    assert run.data.tags["mlflow.runName"] == summary["meta"]["name"]
    assert run.data.params["model.spec"] == summary["meta"]["model"]["spec"]
    checkpoints = summary["checkpoints"]
    for name in ("overall/background_reliant_rate", "overall/border_share_mean/ci_high"):
        statistic, _, end = name.removeprefix("overall/").partition("/")
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        estimates = [c["statistics"]["overall"]["all"][statistic] for c in checkpoints]
        expected = [e["ci"][1] if end else e["value"] for e in estimates]
        assert [m.step for m in history] == [c["step"] for c in checkpoints] == [0, 3, 6]
        assert [m.value for m in history] == pytest.approx(expected)
    passed = client.get_metric_history(run.info.run_id, "check/background_reliant_rate/passed")
    checks = sorted(passed, key=lambda m: m.step)
    assert [m.value for m in checks] == [float(c["passed"]) for c in checkpoints] == [1.0, 0.0, 0.0]
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert names == {"trend.html", "summary.json", "junit.xml"}
