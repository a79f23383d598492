import json

import pytest

from auditcam import cli

pytest.importorskip("tensorboard")


def test_an_audit_logs_scalars_and_gallery_images_read_back_with_tensorboards_reader(audit_argv, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    argv = [*audit_argv, "--log", f"tensorboard:{logdir}", "--log", f"tensorboard:{tmp_path / 'tb2'}"]
    assert cli.main(argv) in (cli.EXIT_PASS, cli.EXIT_FAIL)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    events = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    (check,) = [c for c in summary["checks"] if c["name"] == "background_reliant_rate"]
    (value,) = events.Scalars("check/background_reliant_rate/value")
    assert value.value == pytest.approx(check["value"]) and value.step == 0
    (low,) = events.Scalars("check/background_reliant_rate/ci_low")
    assert low.value == pytest.approx(check["ci"][0])
    accuracy = summary["aggregates"]["gradcam"]["by_class"]["circle"]["accuracy"]
    assert events.Scalars("class/circle/accuracy")[0].value == pytest.approx(accuracy)
    shown = sorted(t for t in tags["images"] if t.startswith("gallery/"))
    assert shown == [f"gallery/{end}/{i:02d}" for end in ("background_reliant", "subject_focused") for i in range(2)]
    image = events.Images(shown[0])[0]
    assert image.width > 0 and image.height > 0
    assert (tmp_path / "tb2").is_dir()  # repeatable: both targets written


def test_a_trend_logs_each_statistic_at_each_checkpoints_step(trend_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _, logdir = trend_run
    summary = json.loads((out / "summary.json").read_text())
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    series = events.Scalars("overall/background_reliant_rate")
    values = [c["statistics"]["overall"]["all"]["background_reliant_rate"]["value"] for c in summary["checkpoints"]]
    assert [e.step for e in series] == [0, 3, 6]
    assert [e.value for e in series] == pytest.approx(values)
    checks = [c["checks"][0]["value"] for c in summary["checkpoints"]]
    assert [e.value for e in events.Scalars("check/background_reliant_rate/value")] == pytest.approx(checks)
