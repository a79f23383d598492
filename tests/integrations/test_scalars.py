from auditcam.integrations.scalars import metric_name, summary_params, summary_scalars


def _slice(value, ci):
    return {"n": 10, "accuracy": value, "subject_share_mean": None, "ci": {"accuracy": ci, "subject_share_mean": None}}


SUMMARY = {
    "passed": False,
    "checks": [
        {"name": "background_reliant_rate", "value": 0.25, "ci": [0.2, 0.3], "threshold": 0.2, "outcome": "fail"},
        {"name": "group_gap:site:accuracy", "value": None, "ci": None, "threshold": 0.1, "outcome": "not applicable"},
    ],
    "aggregates": {
        "gradcam": {
            "overall": _slice(0.5, [0.4, 0.6]),
            "by_class": {"circle": _slice(0.7, [0.6, 0.8])},
            "by_group": {"site": {"A": _slice(0.9, None)}},
            "by_intersection": {"site & tone": {"A & dark": _slice(0.1, [0.0, 0.2])}},
        }
    },
    "meta": {"methods": ["gradcam"], "name": "m", "target": "pred", "layer": None, "checks": {"decide_on": "point"}},
}


def test_every_check_and_statistic_becomes_a_metric_and_what_was_not_measured_is_left_out():
    assert summary_scalars(SUMMARY) == {
        "check/background_reliant_rate/value": 0.25,
        "check/background_reliant_rate/ci_low": 0.2,
        "check/background_reliant_rate/ci_high": 0.3,
        "check/background_reliant_rate/threshold": 0.2,
        "check/background_reliant_rate/passed": 0.0,
        "check/group_gap:site:accuracy/threshold": 0.1,
        "passed": 0.0,
        "overall/accuracy": 0.5,
        "overall/accuracy/ci_low": 0.4,
        "overall/accuracy/ci_high": 0.6,
        "class/circle/accuracy": 0.7,
        "class/circle/accuracy/ci_low": 0.6,
        "class/circle/accuracy/ci_high": 0.8,
        "group/site/A/accuracy": 0.9,
        "group/site _ tone/A _ dark/accuracy": 0.1,
        "group/site _ tone/A _ dark/accuracy/ci_low": 0.0,
        "group/site _ tone/A _ dark/accuracy/ci_high": 0.2,
    }


def test_metric_names_carry_only_what_trackers_accept():
    assert metric_name("class", "a,b&c", "") == "class/a_b_c/_"


def test_the_settings_become_flat_text_parameters():
    params = summary_params(SUMMARY)
    assert params["name"] == "m" and params["target"] == "pred" and params["checks.decide_on"] == "point"
    assert "layer" not in params  # None: not set, not the text "None"
