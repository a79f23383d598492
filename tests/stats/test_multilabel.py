"""Multi-label statistics: per-label and micro precision, recall and accuracy against
scikit-learn on a hand-made prediction table (a false positive that was never explained still
lowers precision), and a bootstrap that resamples samples, not rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, precision_score, recall_score

from auditcam.config import AnalysisOptions, Checks
from auditcam.stats import bootstrap
from auditcam.stats.analysis import analyse
from auditcam.stats.checks import evaluate_checks

CLASSES = ("cat", "dog", "bird")
# true and predicted labels of 12 samples; bird is never a true label, only predicted (false positives)
TRUE = [[0], [0, 1], [1], [], [0], [1], [0, 1], [0], [1], [], [0, 1], [1]]
PRED = [[0], [0], [1, 2], [], [1], [1], [0, 1, 2], [0], [], [2], [0, 1], [1]]
SITE = ["A", "B"] * 6
FAST = AnalysisOptions(bootstrap=300, min_group_size=1, seed=3)


def _indicators(lists: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(lists), len(CLASSES)), dtype=int)
    for i, labels in enumerate(lists):
        out[i, labels] = 1
    return out


def _frame(target: str) -> pd.DataFrame:
    """One method's rows as a multi-label audit writes them: one per explained label (the true
    ones, or the predicted ones), one ``skipped`` row for a sample with none."""
    rng = np.random.default_rng(0)
    rows = []
    for s, (true, pred) in enumerate(zip(TRUE, PRED, strict=True)):
        explained = true if target == "label" else pred
        for c in explained or [None]:
            share = float(rng.uniform(0.1, 0.9))
            rows.append(
                {
                    "position": s,
                    "id": f"s{s}",
                    "label": c,
                    "label_name": None if c is None else CLASSES[c],
                    "pred": c if c in pred else None,
                    "correct": None if c is None else (c in pred) == (c in true),
                    "status": "skipped" if c is None else "ok",
                    "has_subject": c is not None,
                    "subject_share": math.nan if c is None else share,
                    "subject_area": math.nan if c is None else 0.3,
                    "focus_lift": math.nan if c is None else share / 0.3,
                    "pointing_hit": math.nan if c is None else float(share > 0.5),
                    "background_reliant": math.nan if c is None else float(share < 0.3),
                    "border_share": math.nan if c is None else 1.0,
                    "true_labels": true,
                    "pred_labels": pred,
                    "site": SITE[s],
                }
            )
    frame = pd.DataFrame(rows)
    return frame.astype({"label": "Int64", "pred": "Int64", "correct": "boolean", "has_subject": "boolean"})


@pytest.mark.parametrize("target", ["label", "pred"])
def test_precision_recall_and_accuracy_match_sklearn_per_label_and_micro(target):
    y, p = _indicators(TRUE), _indicators(PRED)
    result = analyse(_frame(target), ["site"], FAST, task="multilabel", classes=CLASSES)
    by_class = result.by_group("class")
    # every class in play is a class slice: bird has no row under target=label, yet its precision is 0
    assert list(by_class.index) == list(CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = precision_score(y, p, average=None, zero_division=np.nan)
        recall = recall_score(y, p, average=None, zero_division=np.nan)
    np.testing.assert_allclose(by_class["precision"], precision)
    np.testing.assert_allclose(by_class["recall"], recall)  # bird: no true sample, not measured (NaN)
    np.testing.assert_allclose(by_class["accuracy"], [accuracy_score(y[:, c], p[:, c]) for c in range(3)])
    assert by_class.loc["bird", "precision"] == 0.0
    overall = result.overall["value"]
    assert overall["precision"] == pytest.approx(precision_score(y, p, average="micro"))
    assert overall["recall"] == pytest.approx(recall_score(y, p, average="micro"))
    assert overall["accuracy"] == pytest.approx(accuracy_score(y, p))  # exact match of the label sets
    for site in ("A", "B"):
        mine = np.array(SITE) == site
        group = result.by_group("site").loc[site]
        assert group["precision"] == pytest.approx(precision_score(y[mine], p[mine], average="micro"))
        assert group["recall"] == pytest.approx(recall_score(y[mine], p[mine], average="micro"))
        assert group["accuracy"] == pytest.approx(accuracy_score(y[mine], p[mine]))
    # sizes count samples: those predicted the class, those truly it, every sample
    n = result.by_group("class", "n")
    assert list(n["precision"]) == list(p.sum(0)) and list(n["recall"]) == list(y.sum(0))
    assert set(n["accuracy"]) == {12} and result.overall.loc["precision", "n"] == int((p.sum(1) > 0).sum())


def test_a_false_positive_that_was_never_explained_lowers_precision():
    frame = _frame("label")
    assert 2 not in set(frame["label"].dropna())  # bird is never explained under --target label
    bird_free = [[c for c in labels if c != 2] for labels in PRED]
    clean = frame.assign(pred_labels=[bird_free[s] for s in frame["position"]])
    with_fp = analyse(frame, (), FAST, task="multilabel", classes=CLASSES).overall["value"]["precision"]
    without = analyse(clean, (), FAST, task="multilabel", classes=CLASSES).overall["value"]["precision"]
    y = _indicators(TRUE)
    assert without == pytest.approx(precision_score(y, _indicators(bird_free), average="micro"))
    assert with_fp < without


def test_the_bootstrap_resamples_samples_not_rows():
    frame = _frame("label")
    result = analyse(frame, (), FAST, task="multilabel", classes=CLASSES)
    statistics = list(result.statistics)
    share = result.replicates("overall", "all")[:, statistics.index("subject_share_mean")]
    values = frame["subject_share"].to_numpy(float)
    counted = frame["status"].eq("ok").to_numpy()
    expected = []
    for counts in bootstrap.resample_counts(len(TRUE), FAST.bootstrap, FAST.seed):
        weights = counts[frame["position"].to_numpy()] * counted[:, None]  # a sample's rows are drawn together
        expected.append((weights * np.nan_to_num(values)[:, None]).sum(0) / weights.sum(0))
    np.testing.assert_allclose(share, np.concatenate(expected), rtol=1e-5)
    # accuracy, precision and recall come from the same resamples of the samples
    accuracy = result.replicates("overall", "all")[:, statistics.index("accuracy")]
    exact = (_indicators(TRUE) == _indicators(PRED)).all(1).astype(float)
    reference = np.concatenate([c.T @ exact / c.sum(0) for c in bootstrap.resample_counts(12, FAST.bootstrap, 3)])
    np.testing.assert_allclose(accuracy, reference, rtol=1e-6)


def test_skipped_rows_are_counted_apart_and_not_unscored():
    result = analyse(_frame("label"), (), FAST, task="multilabel", classes=CLASSES)
    overall = result.to_dict()["overall"]
    assert overall["n_skipped"] == 2 and overall["n_error"] == 0 and overall["n_invalid"] == 0
    assert overall["error_rate"] == 0.0  # a sample with nothing to explain is not a fault
    assert "precision" in overall and "recall" in overall


def test_the_accuracy_checks_decide_on_the_label_sets():
    result = analyse(_frame("label"), ["site"], FAST, task="multilabel", classes=CLASSES)
    (check,) = evaluate_checks(result, Checks(max_background_reliant_rate=None, min_accuracy=0.5))
    assert check.value == pytest.approx(accuracy_score(_indicators(TRUE), _indicators(PRED)))
    assert "exactly their true labels" in check.description


def test_a_single_label_analysis_has_no_precision_or_recall():
    from tests.records import samples

    result = analyse(samples({"I": 40}), ["skin_tone"], FAST)
    assert "precision" not in result.statistics and "precision" not in result.to_dict()["overall"]
