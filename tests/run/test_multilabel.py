"""A multi-label batch through the explain loop: every target from one forward pass, one row per
(sample, explained label, method), skipped rows for samples with nothing to explain, and the
resume scan counting samples by position."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from auditcam.cam import Explainer
from auditcam.data import collate, open_dataset
from auditcam.run.loop import NO_TRUE_LABEL, NONE_PREDICTED, _labelled, padded_labels
from auditcam.run.records import SKIPPED, multilabel_records, samples_schema
from auditcam.run.shards import Journal, Layout, journal_path, scan
from tests.multilabel import CLASSES, PREPROCESSING, ShapesNet, write_shapes

METHODS = ("gradcam", "layercam")


@pytest.fixture
def batch(tmp_path):
    manifest = write_shapes(tmp_path, 8, seed=4)
    dataset = open_dataset(manifest, classes=CLASSES, preprocessing=PREPROCESSING, task="multilabel")
    return collate([dataset[i] for i in range(len(dataset))])


@pytest.fixture
def model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ShapesNet().eval()


def _run(model, batch, target: str, threshold: float):
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    how = {"target": target, "threshold": threshold, "classes": CLASSES, "methods": METHODS, "reliance_threshold": 1}
    try:
        scored, _pictures = _labelled(batch, Explainer(model, layer="features", methods=METHODS), batch, how)
    finally:
        handle.remove()
    skipped = NO_TRUE_LABEL if target == "label" else NONE_PREDICTED.format(threshold=threshold)
    records = multilabel_records(batch, list(range(10, 18)), METHODS, CLASSES, ("site",), scored, skipped)
    return calls, records.to_pandas()


def test_true_labels_make_one_row_per_sample_label_and_method_from_one_forward_pass(model, batch):
    calls, rows = _run(model, batch, "label", 0.5)
    assert calls == [1]
    with torch.no_grad():
        probabilities = model(batch["image"]).sigmoid()
    expected = []
    for s, labels in enumerate(batch["labels"]):
        for c in labels or [None]:
            expected += [(10 + s, c)] * len(METHODS)
    assert [(p, None if pd_na(c) else int(c)) for p, c in zip(rows["position"], rows["label"], strict=True)] == expected
    assert list(rows["method"]) == list(METHODS) * (len(expected) // 2)
    explained = rows[rows["label"].notna()]
    for row in explained.itertuples():
        s, c = row.position - 10, int(row.label)
        assert row.label_name == CLASSES[c] and row.target == c
        assert row.confidence == pytest.approx(float(probabilities[s, c]), rel=1e-5)
        positive = bool(probabilities[s, c] >= 0.5)
        assert (not pd_na(row.pred)) == positive and bool(row.correct) == positive  # every explained label is true
        assert list(row.true_labels) == batch["labels"][s]
        assert list(row.pred_labels) == [k for k in range(2) if probabilities[s, k] >= 0.5]
        assert row.has_subject  # each label's own mask
        assert 0 <= row.subject_share <= 1 if row.status == "ok" else row.reason.startswith("heatmap")
    empty = rows[rows["label"].isna()]
    assert len(empty) and set(empty["status"]) == {SKIPPED} and set(empty["reason"]) == {NO_TRUE_LABEL}
    assert empty["subject_share"].isna().all() and not empty["has_subject"].any()


def test_predicted_positives_at_the_threshold_are_the_explained_labels(model, batch):
    with torch.no_grad():
        probabilities = model(batch["image"]).sigmoid()
    threshold = float(probabilities.max(1).values.min()) + 1e-4  # the least confident sample predicts nothing
    calls, rows = _run(model, batch, "pred", threshold)
    assert calls == [1]
    for s in range(len(batch["labels"])):
        mine = rows[rows["position"] == 10 + s]
        wanted = {c for c in range(2) if probabilities[s, c] >= threshold}
        if wanted:
            assert set(mine["label"].astype(int)) == wanted and mine["pred"].notna().all()
            truly = [int(c) in batch["labels"][s] for c in mine["label"]]
            assert list(mine["correct"]) == truly  # predicted positive: right when the label is true
        else:
            assert list(mine["status"]) == [SKIPPED] * 2
            assert set(mine["reason"]) == {f"no label predicted at probability >= {threshold:g}"}
    assert (rows["status"] == SKIPPED).any()


def test_padded_labels_mark_the_missing_targets():
    assert padded_labels([[1, 0], [], [1]]).tolist() == [[1, 0], [-1, -1], [1, -1]]
    assert padded_labels([[], []]).tolist() == [[-1], [-1]]


def pd_na(value) -> bool:
    return value is None or value is pa.NA or (isinstance(value, float) and np.isnan(value)) or str(value) == "<NA>"


def test_the_resume_scan_counts_a_multilabel_journal_by_its_samples(model, batch, tmp_path):
    _, rows = _run(model, batch, "label", 0.5)
    schema = samples_schema(("site",), shard=True, multilabel=True)
    records = pa.RecordBatch.from_pandas(rows, schema=schema, preserve_index=False)
    folder = tmp_path / "shards"
    folder.mkdir()
    layout = Layout(n_samples=16, batch_size=8, shard_size=16)
    journal = Journal(journal_path(folder, 0), schema)
    journal.append(records.slice(0, len(rows)))
    journal.close()
    progress = scan(folder, layout, schema, len(METHODS), fixed=False)
    assert progress.journals == {0: 8}  # one whole batch of 8 samples, however many rows they made


def test_the_gallery_picked_from_samples_parquet_matches_the_one_kept_while_explaining(model, tmp_path):
    """Picked again from the merged samples (by each row's position and label), the gallery
    shows the same (sample, label) rows with the same heatmaps and that label's mask."""
    from auditcam import AuditSettings, audit
    from auditcam.run.gallery import pick_gallery

    manifest = write_shapes(tmp_path / "data", 12, seed=6)
    dataset = open_dataset(manifest, classes=CLASSES, preprocessing=PREPROCESSING, task="multilabel")
    settings = AuditSettings(methods=("layercam",), task="multilabel", target="label", gallery_size=3, batch_size=4)
    result = audit(model, dataset, settings, run_dir=tmp_path / "run", progress=False)
    with Explainer(model, methods=("layercam",)) as explainer:
        again = pick_gallery(result.samples_path, explainer, dataset, ["layercam"], 3, 4, torch.device("cpu"), {})
    for kept, redone in (
        (result.gallery.background_reliant, again.background_reliant),
        (result.gallery.subject_focused, again.subject_focused),
    ):
        assert [e.record for e in kept] == [e.record for e in redone] and len(kept) == 3
        for a, b in zip(kept, redone, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
            item = dataset[int(a.record["id"].removeprefix("images/").removesuffix(".png"))]
            own = item["masks"][item["mask_of"][item["labels"].index(a.record["label"])]]
            np.testing.assert_array_equal(a.mask, own.numpy())  # the mask shown is that label's own
