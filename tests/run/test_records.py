"""Per-sample records built a batch at a time equal the row-by-row construction they replace."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest
import torch

from auditcam.cam import Explainer
from auditcam.run.records import POSITION, batch_records, columns, samples_schema, score_explanation
from auditcam.scoring import INVALID_REASONS, METRICS, score

CLASSES = ("circle", "square", "cross")


@pytest.fixture
def batch(gen):
    """Four samples: readable, unreadable, readable with an empty mask, readable."""
    images = torch.randn(3, 3, 16, 16, generator=gen)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 4:12, 4:12] = True
    masks[2, 2:8, 6:14] = True  # masks[1] stays empty: invalid
    return {
        "id": ["a", "b", "c", "d"],
        "image_path": ["a.png", "b.png", "c.png", "d.png"],
        "label": torch.tensor([0, 1, 2, 1]),
        "attributes": [{"site": "A"}, {"site": "B"}, {"site": "unknown"}, {"site": "A"}],
        "status": ["ok", "error", "ok", "ok"],
        "reason": ["", "corrupt or truncated image", "", ""],
        "note": ["", "", "mask resized", ""],
        "ok": torch.tensor([True, False, True, True]),
        "image": images,
        "mask": masks,
    }


def _reference(batch, positions, methods, explanation, threshold):
    """Row by row, the way the records were built before batching: one dict per (sample, method)."""
    rows = []
    readable = iter(range(int(batch["ok"].sum())))
    probabilities = explanation.logits.float().softmax(dim=1)
    per_method = {m: score(explanation.maps[m], batch["mask"], reliance_threshold=threshold) for m in methods}
    for i, position in enumerate(positions):
        j = next(readable) if batch["ok"][i] else None
        label = int(batch["label"][i])
        for method in methods:
            row = {
                POSITION: position,
                "id": batch["id"][i],
                "image": batch["image_path"][i],
                "method": method,
                "label": label,
                "label_name": CLASSES[label],
                "pred": None,
                "pred_name": None,
                "correct": None,
                "confidence": math.nan,
                "target": None,
                "status": batch["status"][i],
                "reason": batch["reason"][i],
                "note": batch["note"][i],
                "has_subject": bool(batch["ok"][i]),  # a batch without the key: every readable sample has one
                **dict.fromkeys(METRICS, math.nan),
                "strategy": None,
                "heatmap_grid": None,
                "site": batch["attributes"][i]["site"],
            }
            if j is not None:
                pred = int(probabilities[j].argmax())
                row.update(
                    pred=pred,
                    pred_name=CLASSES[pred],
                    correct=pred == label,
                    confidence=float(probabilities[j].max()),
                    target=int(explanation.targets[j]),
                    **{name: float(per_method[method][name][j]) for name in METRICS},
                    # 16 px maps in 2x2 blocks: the mean of each block, row-major
                    heatmap_grid=explanation.maps[method][j].reshape(8, 2, 8, 2).mean(dim=(1, 3)).ravel().tolist(),
                )
                code = int(per_method[method]["invalid"][j])
                if code:
                    row.update(status="invalid", reason=INVALID_REASONS[code])
            rows.append(row)
    return rows


def _assert_grids_close(got, expected):
    """The pooled grids equal the block means (to float32 precision); then set aside for the frame comparison."""
    for a, b in zip(got.pop("heatmap_grid"), expected.pop("heatmap_grid"), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert len(a) == 64 and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


def test_batch_records_match_the_row_by_row_records(batch, tiny_net):
    methods = ("gradcam",)
    with Explainer(tiny_net, methods=methods) as explainer:
        explanation = explainer(batch["image"])
    positions = [10, 11, 12, 13]
    scored = score_explanation(explanation, batch["mask"], methods, 0.8)
    records = batch_records(batch, positions, methods, CLASSES, ("site",), scored)
    assert records.schema.equals(samples_schema(("site",), shard=True))
    assert records.schema.names == [POSITION, *columns(("site",))]
    got = pd.DataFrame(records.to_pylist())
    expected = pd.DataFrame(_reference(batch, positions, methods, explanation, 0.8))
    _assert_grids_close(got, expected)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert list(got["status"]) == ["ok", "error", "invalid", "ok"]


def test_several_methods_give_sample_major_rows(batch, tiny_net):
    methods = ("gradcam", "other")
    with Explainer(tiny_net, methods=("gradcam",)) as explainer:
        explanation = explainer(batch["image"])
    # a second "method": the same maps squared, so its metrics differ from gradcam's
    explanation.maps["other"] = explanation.maps["gradcam"] ** 2
    scored = score_explanation(explanation, batch["mask"], methods, 1.0)
    records = batch_records(batch, [0, 1, 2, 3], methods, None, ("site",), scored)
    got = pd.DataFrame(records.to_pylist())
    expected = pd.DataFrame(_reference(batch, [0, 1, 2, 3], methods, explanation, 1.0))
    expected["label_name"] = expected["label"].astype(str)
    expected["pred_name"] = [None if pd.isna(p) else str(int(p)) for p in expected["pred"]]
    _assert_grids_close(got, expected)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert list(got["method"]) == ["gradcam", "other"] * 4


def test_a_batch_without_readable_samples(batch):
    unreadable = {**batch, "ok": torch.zeros(4, dtype=torch.bool), "status": ["error"] * 4}
    records = batch_records(unreadable, [0, 1, 2, 3], ("gradcam",), CLASSES, ("site",), None)
    table = pa.Table.from_batches([records])
    assert table.column("pred").null_count == 4 and table.column("correct").null_count == 4
    assert all(math.isnan(v) for v in table.column("subject_share").to_pylist())


def test_schema_restores_the_nullable_pandas_dtypes(batch, tiny_net, tmp_path):
    import pyarrow.parquet as pq

    with Explainer(tiny_net) as explainer:
        explanation = explainer(batch["image"])
    scored = score_explanation(explanation, batch["mask"], ("gradcam",), 1.0)
    records = batch_records(batch, [0, 1, 2, 3], ("gradcam",), CLASSES, ("site",), scored)
    pq.write_table(pa.Table.from_batches([records]).drop_columns([POSITION]), tmp_path / "s.parquet")
    frame = pd.read_parquet(tmp_path / "s.parquet")
    assert str(frame["pred"].dtype) == "Int64" and str(frame["correct"].dtype) == "boolean"
    assert frame["label"].dtype == "int64" and isinstance(frame["id"].dtype, pd.StringDtype)
    assert frame["pred"].isna().tolist() == [False, True, False, False]
