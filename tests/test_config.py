"""Checks and options from the command line, a --config TOML file and [tool.auditcam]."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from auditcam.config import (
    BAD_SETTING,
    DONORS_NEED_COUNTERFACTUAL,
    KEYS,
    RUN_KEYS,
    AnalysisOptions,
    AuditSettings,
    Checks,
    GroupGap,
    Threshold,
    WorstGroupAccuracy,
    find_pyproject,
    load_config,
    read_config_file,
)
from auditcam.errors import InputError

FULL = """
max_background_reliant_rate = {value = 0.25, decide_on = "upper"}
min_subject_share = 0.4
min_accuracy = 0.9
max_error_rate = 0.01
min_worst_group_accuracy = {value = 0.8, attribute = "skin_tone"}
max_group_gap = [
  {attribute = "skin_tone", metric = "subject_share", value = 0.1},
  {attribute = "skin_tone,site", metric = "background_reliant_rate", value = 0.15, decide_on = "strict"},
]
max_bg_gap = 0.15
max_sanity_correlation = {value = 0.4, decide_on = "upper"}
decide_on = "lower"
insufficient_data = "skip"
min_group_size = 50
bootstrap = 2000
confidence = 0.9
seed = 7
intersections = ["skin_tone,site", ["site", "sex"]]
"""


def _write(path, text):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_toml_file_round_trips_every_key(tmp_path):
    config = load_config(config_file=_write(tmp_path / "audit.toml", FULL), cwd=tmp_path, use_pyproject=False)
    assert config.checks == Checks(
        max_background_reliant_rate=Threshold(0.25, "upper"),
        min_subject_share=Threshold(0.4),
        min_accuracy=Threshold(0.9),
        max_error_rate=Threshold(0.01),
        min_worst_group_accuracy=WorstGroupAccuracy(0.8, "skin_tone"),
        max_group_gap=(
            GroupGap("skin_tone", "subject_share_mean", 0.1),
            GroupGap("skin_tone,site", "background_reliant_rate", 0.15, "strict"),
        ),
        max_bg_gap=Threshold(0.15),
        max_sanity_correlation=Threshold(0.4, "upper"),
        decide_on="lower",
        insufficient_data="skip",
    )
    assert config.analysis == AnalysisOptions(
        min_group_size=50,
        bootstrap=2000,
        confidence=0.9,
        seed=7,
        intersections=(("skin_tone", "site"), ("site", "sex")),
    )
    assert config.sources == (str(tmp_path / "audit.toml"),)


def test_the_same_table_in_pyproject_is_found_from_a_subfolder(tmp_path):
    _write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n\n[tool.auditcam]\n" + FULL)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    _write(tmp_path / "a" / "pyproject.toml", "[tool.ruff]\nline-length = 100\n")  # no [tool.auditcam]: passed over
    assert find_pyproject(nested) == tmp_path / "pyproject.toml"
    from_pyproject = load_config(cwd=nested)
    from_file = load_config(config_file=_write(tmp_path / "audit.toml", FULL), use_pyproject=False)
    assert (from_pyproject.checks, from_pyproject.analysis) == (from_file.checks, from_file.analysis)
    assert load_config(cwd=nested, use_pyproject=False).checks == Checks()


def test_precedence_command_line_then_config_then_pyproject_then_defaults(tmp_path):
    _write(tmp_path / "pyproject.toml", "[tool.auditcam]\nmin_subject_share = 0.1\nmin_accuracy = 0.1\nseed = 1\n")
    config_file = _write(
        tmp_path / "ci.toml",
        "min_accuracy = 0.2\nseed = 2\nmax_group_gap = {attribute = 'site', metric = 'accuracy', value = 0.3}\n",
    )
    config = load_config({"seed": 3, "max_background_reliant_rate": False}, config_file, cwd=tmp_path)
    assert config.checks.min_subject_share == Threshold(0.1)  # pyproject
    assert config.checks.min_accuracy == Threshold(0.2)  # --config over pyproject
    assert config.analysis.seed == 3  # command line over both
    assert config.checks.max_background_reliant_rate is None  # the default check turned off
    assert config.analysis.min_group_size == 30  # default
    assert config.checks.max_group_gap == (GroupGap("site", "accuracy", 0.3),)
    replaced = load_config(
        {"max_group_gap": [{"attribute": "site", "metric": "focus_lift", "value": 1.0}]}, config_file, cwd=tmp_path
    )
    assert replaced.checks.max_group_gap == (GroupGap("site", "focus_lift_mean", 1.0),)  # lists are replaced whole
    assert config.sources == (str(tmp_path / "pyproject.toml"), str(config_file))


def test_an_unknown_key_names_the_file_and_key(tmp_path):
    path = _write(tmp_path / "pyproject.toml", "[tool.auditcam]\nmax_gap = 0.1\n")
    with pytest.raises(InputError) as error:
        load_config(cwd=tmp_path)
    assert str(error.value) == f"{path}: [tool.auditcam] max_gap: unknown key; known keys: {', '.join(KEYS)}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_group_size = 0", "min_group_size: expected an integer >= 1, got 0"),
        ("decide_on = 'median'", "decide_on: expected one of 'point', 'upper', 'lower', 'strict', got 'median'"),
        (
            "max_background_reliant_rate = 1.5",
            "max_background_reliant_rate: expected a number between 0 and 1, got 1.5",
        ),
        ("min_subject_share = 'high'", "min_subject_share: expected a number, got 'high'"),
        ("confidence = 1", "confidence: expected a number between 0 and 1 (exclusive), got 1"),
        ("max_group_gap = {attribute = 'site', value = 0.1}", "max_group_gap: item 1: missing key 'metric'"),
        (
            "max_group_gap = {attribute = 'site', metric = 'iou', value = 0.1}",
            "max_group_gap: item 1: metric: expected one of accuracy, precision, recall, subject_share",
        ),
        ("min_subject_share = {value = 0.5, decide = 'upper'}", "min_subject_share: unknown key 'decide'"),
        ("intersections = ['site']", "intersections: an intersection needs two or more distinct attribute names"),
        ("seed = true", "seed: expected an integer >= 0, got True"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path / "audit.toml", text + "\n")
    with pytest.raises(InputError) as error:
        read_config_file(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


def test_broken_toml_and_missing_file(tmp_path):
    path = _write(tmp_path / "audit.toml", "min_subject_share = \n")
    with pytest.raises(InputError, match=r"audit\.toml: not valid TOML \("):
        read_config_file(path)
    with pytest.raises(InputError, match=r"nope\.toml: config file not found"):
        read_config_file(tmp_path / "nope.toml")


def test_the_command_line_layer_is_validated_too():
    with pytest.raises(InputError) as error:
        load_config({"max_group_gap": [{"attribute": "site", "metric": "speed", "value": 0.1}]}, use_pyproject=False)
    assert str(error.value).startswith("--max-group-gap: item 1: metric: expected one of")


def test_checks_built_in_python_are_validated():
    with pytest.raises(
        InputError, match=r"^Checks.decide_on: expected one of 'point', 'upper', 'lower', 'strict', got 'mean'$"
    ):
        Checks(decide_on="mean")
    with pytest.raises(InputError, match=r"^Checks.min_subject_share: expected a number between 0 and 1, got 2$"):
        Checks(min_subject_share=2)
    assert Checks(min_subject_share=0.5).min_subject_share == Threshold(0.5)


RUN = """
methods = ["layercam", "gradcam"]
layer = "features.3"
target = "label"
reliance_threshold = 0.8
batch_size = 16
shard_size = 64
device = "cpu"
amp = "bf16"
gallery_size = 4
featuremap_channels = 0
counterfactual = true
counterfactual_samples = 20
bg_donors = "donors.csv"
bg_fill = "black"
bg_match = ["site"]
sanity = true
sanity_samples = 8
sanity_stages = 3
"""


def test_every_run_setting_comes_from_a_toml_file(tmp_path):
    config = load_config(config_file=_write(tmp_path / "audit.toml", RUN), cwd=tmp_path, use_pyproject=False)
    assert config.settings == AuditSettings(
        methods=("layercam", "gradcam"),
        layer="features.3",
        target="label",
        reliance_threshold=0.8,
        batch_size=16,
        shard_size=64,
        device="cpu",
        amp="bf16",
        gallery_size=4,
        featuremap_channels=0,
        counterfactual=True,
        counterfactual_samples=20,
        bg_donors="donors.csv",
        bg_fill="black",
        bg_match=("site",),
        sanity=True,
        sanity_samples=8,
        sanity_stages=3,
    )
    assert set(RUN_KEYS) == {f.name for f in dataclasses.fields(AuditSettings)}  # the table covers every setting
    assert config.checks == Checks() and config.analysis == AnalysisOptions()


def test_run_settings_from_pyproject_under_the_config_file_under_the_flags(tmp_path):
    _write(tmp_path / "pyproject.toml", '[tool.auditcam]\nbatch_size = 8\ntarget = "label"\nmethods = "hirescam"\n')
    _write(tmp_path / "audit.toml", "batch_size = 16\nsanity = true\n")
    config = load_config({"methods": "gradcam,layercam"}, tmp_path / "audit.toml", cwd=tmp_path)
    settings = config.settings
    assert (settings.methods, settings.batch_size, settings.target) == (("gradcam", "layercam"), 16, "label")
    assert settings.sanity and settings.device == AuditSettings().device  # untouched keys keep the defaults
    assert config.sources == (str(tmp_path / "pyproject.toml"), str(tmp_path / "audit.toml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_size = 0", "batch_size: expected an integer >= 1, got 0"),
        ('target = "logit"', "target: expected one of 'pred', 'label', got 'logit'"),
        ('amp = "int8"', "amp: expected one of 'auto', 'bf16', 'fp16', got 'int8'"),
        ("methods = []", "methods: give at least one method, e.g. gradcam; got []"),
        ('sanity = "yes"', "sanity: expected true or false, got 'yes'"),
        ("reliance_threshold = -1", "reliance_threshold: expected a number >= 0, got -1"),
    ],
)
def test_bad_run_settings_name_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path / "audit.toml", text + "\n")
    with pytest.raises(InputError) as error:
        load_config(config_file=path, cwd=tmp_path, use_pyproject=False)
    assert str(error.value) == f"{path}: {message}"
    pyproject = _write(tmp_path / "pyproject.toml", f"[tool.auditcam]\n{text}\n")
    with pytest.raises(InputError) as error:
        load_config(cwd=tmp_path)
    assert str(error.value) == f"{pyproject}: [tool.auditcam] {message}"


def test_an_unknown_run_key_names_the_file_and_lists_the_run_keys(tmp_path):
    path = _write(tmp_path / "audit.toml", "batchsize = 8\n")
    with pytest.raises(InputError) as error:
        load_config(config_file=path, cwd=tmp_path, use_pyproject=False)
    assert str(error.value).startswith(f"{path}: batchsize: unknown key; known keys: ")
    assert all(key in str(error.value) for key in RUN_KEYS)


def test_settings_built_in_python_raise_a_value_error_naming_the_parameter():
    with pytest.raises(ValueError) as error:  # an InputError is a ValueError
        AuditSettings(batch_size=0)
    assert isinstance(error.value, InputError) and error.value.parameter == "batch_size"
    assert str(error.value) == BAD_SETTING.format(key="batch_size", reason="expected an integer >= 1, got 0")
    with pytest.raises(InputError) as error:
        AuditSettings(bg_donors="donors.csv")
    assert str(error.value) == DONORS_NEED_COUNTERFACTUAL and error.value.parameter == "bg_donors"


def test_describe_is_json_ready_and_its_records_part_is_what_the_records_depend_on():
    from auditcam.cam import CaptumMethod

    donors = type("Donors", (), {"source": "donors.csv"})()
    settings = AuditSettings(
        methods=("gradcam", CaptumMethod("Saliency")), counterfactual=True, bg_donors=donors, batch_size=8
    )
    described = settings.describe()
    assert json.loads(json.dumps(described)) == described
    assert described["methods"] == ["gradcam", "captum:Saliency"] and described["bg_donors"] == "donors.csv"
    assert list(described) == list(RUN_KEYS)
    records = settings.describe(records_only=True)
    assert records == {k: described[k] for k in RUN_KEYS if RUN_KEYS[k].records}
    assert set(records) == {
        "methods",
        "layer",
        "target",
        "task",
        "threshold",
        "reliance_threshold",
        "batch_size",
        "shard_size",
        "device",
        "amp",
    }
