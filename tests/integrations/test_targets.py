import importlib.util

import pytest

from auditcam import cli
from auditcam.errors import InputError
from auditcam.integrations.targets import DEFAULT_MLFLOW_URI, LogTarget, parse_log_target


def test_targets_parse_with_their_defaults(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert parse_log_target("mlflow") == LogTarget("mlflow", DEFAULT_MLFLOW_URI)
    assert parse_log_target("mlflow:http://host:5000") == LogTarget("mlflow", "http://host:5000")
    assert parse_log_target("tensorboard:tb/logs") == LogTarget("tensorboard", "tb/logs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert parse_log_target("mlflow").where == "sqlite:///elsewhere.db"


@pytest.mark.parametrize("text", ["mlflow:http://", "mlflow:not a uri", "mlflow:sqlite://", "wandb", "mlflow:ftp:x"])
def test_an_unknown_target_or_a_malformed_uri_is_refused(text):
    with pytest.raises(InputError, match=r"^--log"):
        parse_log_target(text)


@pytest.mark.parametrize(("target", "extra"), [("mlflow", "mlflow"), ("tensorboard:runs", "tensorboard")])
def test_a_missing_extra_exits_2_in_one_line_before_any_work(audit_argv, monkeypatch, capsys, tmp_path, target, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == extra else real(name, *a))
    assert cli.main([*audit_argv, "--log", target]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pip install 'auditcam[{extra}]'" in err[0]
    assert not (tmp_path / "out").exists()  # refused before the audit started


def test_an_unknown_target_exits_2_before_any_work(audit_argv, capsys, tmp_path):
    assert cli.main([*audit_argv, "--log", "wandb:project"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown target" in err[0] and "--log" in err[0]
    assert not (tmp_path / "out").exists()
