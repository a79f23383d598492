"""The command line end to end: exit codes, one-line errors, reports on disk."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from auditcam import cli
from auditcam.config import RUN_KEYS, AuditSettings
from auditcam.demo import MODEL_SPEC
from tests.htmlcheck import parse_page

CONSOLE_SCRIPT = Path(sys.executable).parent / "auditcam"


def _audit_args(demo_run, name: str, out: Path) -> list[str]:
    return [
        "audit",
        "--model",
        MODEL_SPEC,
        "--weights",
        str(demo_run.weights[name]),
        "--data",
        str(demo_run.manifest),
        "--out",
        str(out),
        "--name",
        f"{name} model",
        "--no-progress",
    ]


def test_shortcut_model_fails_and_clean_model_passes(demo_run, tmp_path, capsys):
    assert cli.main(_audit_args(demo_run, "shortcut", tmp_path / "shortcut")) == cli.EXIT_FAIL
    assert "FAILED" in capsys.readouterr().out
    assert cli.main(_audit_args(demo_run, "clean", tmp_path / "clean")) == cli.EXIT_PASS
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in ("shortcut", "clean")}
    share = {name: s["aggregates"]["gradcam"]["overall"]["subject_share_mean"] for name, s in summaries.items()}
    assert share["clean"] - share["shortcut"] > 0.25, share
    for name, summary in summaries.items():
        html = (tmp_path / name / "report.html").read_text(encoding="utf-8")
        parse_page(html)
        assert f"{name} model" in html
        assert summary["meta"]["command"].startswith("auditcam audit --model auditcam.demo.models:tiny_cnn")
        assert (tmp_path / name / "samples.parquet").stat().st_size > 0
    assert summaries["shortcut"]["checks"][0]["outcome"] == "fail"
    assert summaries["clean"]["checks"][0]["outcome"] == "pass"


def test_demo_reports_name_both_models(demo_run):
    index = demo_run.reports["index"].read_text(encoding="utf-8")
    parse_page(index)
    assert "shortcut model" in index and "clean model" in index
    for name in ("shortcut", "clean"):
        parse_page(demo_run.reports[name].read_text(encoding="utf-8"))
    # the planted group gap: site A shows the shortcut texture in high contrast
    groups = demo_run.results["shortcut"].aggregates["gradcam"]["by_group"]["site"]
    assert groups["A"]["subject_share_mean"] < groups["B"]["subject_share_mean"] - 0.03
    assert not demo_run.results["shortcut"].passed and demo_run.results["clean"].passed


def test_missing_file_in_manifest_exits_2_naming_row_and_path(demo_run, tmp_path):
    manifest = tmp_path / "manifest.csv"
    lines = demo_run.manifest.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("images/00002.png", "images/missing.png")
    manifest.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    for name in ("images", "masks"):
        (tmp_path / name).symlink_to(demo_run.manifest.parent / name)
    proc = subprocess.run(
        [
            str(CONSOLE_SCRIPT),
            "audit",
            "--model",
            MODEL_SPEC,
            "--weights",
            str(demo_run.weights["clean"]),
            "--data",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "manifest.csv row 3 (line 4), column 'image': file not found: images/missing.png" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "--data", "x.csv", "--out", "o"], "the following arguments are required: --model"),
        (
            ["audit", "--model", "m:f", "--data", "x.csv", "--out", "o", "--batch-size", "0"],
            "expected a positive integer, got '0'",
        ),
        (["audit", "--model", "torchvision:resnet18", "--data", "nope.csv", "--out", "o"], "manifest not found"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_bug_exits_3_with_a_traceback(monkeypatch, capsys):
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("auditcam.models.load_model_info", broken)
    assert cli.main(["audit", "--model", "x:y", "--data", "d.csv", "--out", "o"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "this is a bug" in err


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "auditcam", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("auditcam ")


def _subset(demo_run, folder: Path, rows: int) -> Path:
    """The first ``rows`` samples of the demo's held-out manifest (images shared by symlink)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = demo_run.manifest.read_text(encoding="utf-8").splitlines()
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    for name in ("images", "masks"):
        (folder / name).symlink_to(demo_run.manifest.parent / name)
    return manifest


def test_compare_exits_with_model_b_verdict(demo_run, tmp_path, capsys):
    manifest = _subset(demo_run, tmp_path / "data", 120)
    common = ["--model", MODEL_SPEC, "--data", str(manifest), "--min-group-size", "10", "--bootstrap", "200"]
    weights = [str(demo_run.weights["shortcut"]), str(demo_run.weights["clean"])]
    out = tmp_path / "cmp"
    argv = ["compare", *common, "--weights", weights[0], "--weights", weights[1], "--out", str(out), "--no-progress"]
    assert cli.main(argv) == cli.EXIT_PASS  # B (clean) passes its checks
    printed = capsys.readouterr().out
    assert "focus moved subject -> background in" in printed and "B PASSED" in printed
    assert {p.name for p in out.iterdir()} >= {"comparison.html", "comparison.json", "junit.xml", "samples_a.parquet"}
    data = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert (data["a"]["name"], data["b"]["name"]) == ("shortcut", "clean")
    assert not data["a"]["passed"] and data["b"]["passed"]
    reversed_argv = ["compare", *common, "--weights", weights[1], "--weights", weights[0], "--out", str(out)]
    assert cli.main([*reversed_argv, "--no-progress"]) == cli.EXIT_FAIL  # B (shortcut) fails
    assert (
        cli.main(["compare", *common, "--weights", "a.pt", "--weights", "b.pt", "--weights", "c.pt", "--out", "o"]) == 2
    )
    assert "--weights: give it once (both models) or twice (A, then B), not 3 times" in capsys.readouterr().err


def test_checks_come_from_pyproject_then_config_then_flags(demo_run, tmp_path, monkeypatch):
    from tests.report.test_junit import assert_junit_shape

    manifest = _subset(demo_run, tmp_path / "data", 60)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        "[tool.auditcam]\nmax_background_reliant_rate = false\nmin_subject_share = 0.3\nmin_group_size = 10\n"
        "bootstrap = 200\nmax_group_gap = {attribute = 'site', metric = 'subject_share', value = 0.5}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(project)
    args = ["audit", "--model", MODEL_SPEC, "--weights", str(demo_run.weights["clean"]), "--data", str(manifest)]
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--no-progress"]) == cli.EXIT_PASS
    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in summary["checks"]] == [
        "mean_subject_share",
        "group_gap:site:subject_share_mean",
        "location_shortcut",  # on by default
    ]
    assert summary["meta"]["config_sources"] == [str(project / "pyproject.toml")]
    root = assert_junit_shape((tmp_path / "a" / "junit.xml").read_text(encoding="utf-8"))
    assert [c.get("name") for c in root.iter("testcase")] == [c["name"] for c in summary["checks"]]

    (tmp_path / "strict.toml").write_text("min_subject_share = 0.99\n", encoding="utf-8")
    strict = [*args, "--out", str(tmp_path / "b"), "--config", str(tmp_path / "strict.toml"), "--no-progress"]
    assert cli.main(strict) == cli.EXIT_FAIL  # --config over pyproject
    # the flag over --config, on the same samples (--resume analyses a finished run again)
    assert cli.main([*strict, "--min-subject-share", "0.1", "--resume"]) == cli.EXIT_PASS
    isolated = [*args, "--out", str(tmp_path / "c"), "--isolated", "--min-group-size", "10", "--no-progress"]
    assert cli.main(isolated) == cli.EXIT_PASS
    summary = json.loads((tmp_path / "c" / "summary.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in summary["checks"]] == ["background_reliant_rate", "location_shortcut"]  # defaults


def test_bad_config_exits_2_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "audit.toml"
    bad.write_text("max_gap = 0.1\n", encoding="utf-8")
    argv = ["audit", "--model", MODEL_SPEC, "--data", "x.csv", "--out", str(tmp_path / "o"), "--config", str(bad)]
    assert cli.main(argv) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"auditcam: error: {bad}: max_gap: unknown key; known keys:")
    assert cli.main([*argv[:-2], "--max-group-gap", "site:0.1"]) == cli.EXIT_INPUT
    assert "expected ATTRIBUTE:METRIC:VALUE" in capsys.readouterr().err


def test_several_methods_and_a_captum_attribution_from_the_command_line(demo_run, tmp_path):
    manifest = _subset(demo_run, tmp_path / "data", 8)
    args = _audit_args(demo_run, "clean", tmp_path / "out")
    args[args.index("--data") + 1] = str(manifest)
    methods = ["layercam", "gradcam++", "captum:Saliency"]
    assert cli.main([*args, "--method", ",".join(methods)]) in (cli.EXIT_PASS, cli.EXIT_FAIL)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["meta"]["methods"] == methods and summary["meta"]["upsampling"] == "bilinear, align_corners=False"
    assert set(summary["aggregates"]) == set(methods)
    assert all(summary["aggregates"][m]["overall"]["n_valid"] == 8 for m in methods)


def test_an_unknown_method_exits_2_naming_the_choices(demo_run, tmp_path, capsys):
    args = [*_audit_args(demo_run, "clean", tmp_path / "out"), "--method", "gradcam,gradkam"]
    assert cli.main(args) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown CAM method 'gradkam'; choose from gradcam" in err


def _options(command: str) -> set[str]:
    """Every long option of one subcommand, from the parser itself."""
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {s for a in commands.choices[command]._actions for s in a.option_strings if s.startswith("--")} - {"--help"}


def _readme_section(title: str) -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize("command", ["demo", "audit", "trend", "validate", "featuremaps", "report"])
def test_the_cli_reference_names_every_option(command):
    reference = _readme_section("CLI reference")
    assert {o for o in _options(command) if f"`{o}" not in reference} == set()


def test_the_cli_reference_says_which_audit_options_compare_lacks():
    (row,) = [line for line in _readme_section("CLI reference").splitlines() if line.startswith("| `auditcam compare`")]
    lacks = _options("audit") - _options("compare")
    said = set(re.findall(r"`(--[a-z-]+)", row.split("but", 1)[1]))
    counterfactual_and_sanity = {o for o in lacks if o.startswith(("--bg", "--counterfactual", "--sanity"))}
    assert said | counterfactual_and_sanity == lacks
    assert _options("compare") - _options("audit") == set()


def _subcommand(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[command]


def _run_flags(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subcommand(command)._actions if a.dest in RUN_KEYS}


def test_audit_compare_and_trend_take_every_run_setting_from_the_one_key_table():
    audit, compare, trend = _run_flags("audit"), _run_flags("compare"), _run_flags("trend")
    assert set(audit) == set(compare) == set(trend) == set(RUN_KEYS)  # a key missing from a parser fails here
    for name, key in RUN_KEYS.items():
        a, b, c = audit[name], compare[name], trend[name]
        assert a.option_strings == b.option_strings == c.option_strings == [key.option]
        assert (a.help, a.nargs, a.const, a.metavar) == (b.help, b.nargs, b.const, b.metavar)
        assert (a.help, a.nargs, a.const, a.metavar) == (c.help, c.nargs, c.const, c.metavar)
        assert a.default is b.default is argparse.SUPPRESS  # absent unless given: the config layers show through
        if key.action is None and key.default is not None:
            shown = ",".join(key.default) if isinstance(key.default, tuple) else key.default
            assert f"(default: {shown})" in a.help


@pytest.mark.parametrize("command", ["audit", "compare", "trend"])
def test_every_command_parses_the_same_flags_into_the_same_settings(command):
    flags = ["--method", "layercam,gradcam", "--batch-size", "8", "--amp", "--sanity", "--counterfactual"]
    flags += ["--bg-match", "site", "--bg-match", "scanner", "--no-strategies", "--weights", "w.pt"]
    args = cli.build_parser().parse_args(
        [command, "--model", "m:f", "--data", "x.csv", "--out", "o", "--isolated", *flags]
    )
    settings = cli.load_config_from_args(args).settings
    assert settings == AuditSettings(
        methods=("layercam", "gradcam"),
        batch_size=8,
        amp="auto",
        sanity=True,
        counterfactual=True,
        bg_match=("site", "scanner"),
        strategies=False,
    )


@pytest.mark.parametrize("command", ["audit", "compare"])
def test_a_bad_run_setting_exits_2_naming_the_flag(command, capsys):
    argv = [command, "--model", "m:f", "--data", "x.csv", "--out", "o", "--isolated", "--target", "logit"]
    assert cli.main(argv) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err == "auditcam: error: --target: expected one of 'pred', 'label', got 'logit'"


def test_a_library_error_about_a_parameter_is_shown_with_its_flag(demo_run, tmp_path, capsys):
    argv = [*_audit_args(demo_run, "clean", tmp_path / "out"), "--device", "tpu"]
    assert cli.main(argv) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err == "auditcam: error: --device 'tpu': choose from auto, cpu, cuda (or cuda:N)"


@pytest.fixture
def bundle(tmp_path) -> Path:
    """An audit folder written from synthetic records (no model run)."""
    from auditcam import AnalysisOptions, Checks
    from tests.records import audit_result, gallery, samples

    frame = samples({"light": 40, "dark": 40}, share={"dark": 0.25}, seed=2)
    audit_result(frame, Checks(), AnalysisOptions(bootstrap=50), exemplars=gallery(frame, size=2)).write(tmp_path / "a")
    return tmp_path / "a"


def test_report_renders_an_audit_folder_again(bundle, capsys):
    page = (bundle / "report.html").read_text(encoding="utf-8")
    (bundle / "report.html").unlink()
    (bundle / "junit.xml").unlink()
    assert cli.main(["report", str(bundle)]) == cli.EXIT_PASS
    assert (bundle / "report.html").read_text(encoding="utf-8") == page and (bundle / "junit.xml").is_file()
    assert str(bundle / "report.html") in capsys.readouterr().out


def test_report_format_junit_writes_only_junit(bundle):
    (bundle / "report.html").unlink()
    (bundle / "junit.xml").unlink()
    assert cli.main(["report", str(bundle), "--format", "junit"]) == cli.EXIT_PASS
    assert (bundle / "junit.xml").is_file() and not (bundle / "report.html").exists()


@pytest.mark.parametrize(
    ("damage", "argv_tail", "message"),
    [
        ("samples.parquet", [], "not an audit bundle, samples.parquet is missing"),
        ("", ["--format", "pdf"], "--format 'pdf': choose from html, junit"),
    ],
)
def test_report_of_a_bad_folder_exits_2_with_one_line(bundle, capsys, damage, argv_tail, message):
    if damage:
        (bundle / damage).unlink()
    assert cli.main(["report", str(bundle), *argv_tail]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
