"""Any torch Dataset yielding the item dict plugs into the audit; contract breaks become records."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from auditcam import audit
from auditcam.config import AuditSettings
from auditcam.data import WrappedDataset, as_audit_dataset
from auditcam.errors import InputError


class Shapes(Dataset):
    """Six 64x64 items: a box subject, a mask subject, a user-reported fault and a bad mask."""

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(6, 3, 64, 64, generator=self.gen)

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index], "label": index % 3, "attributes": {"site": "AB"[index % 2]}}
        if index == 2:
            return {"label": 1, "status": "error", "reason": "camera file unreadable", "id": "cam-2"}
        if index == 4:
            return {**item, "mask": torch.ones(32, 32)}
        if index == 5:
            return {**item, "attributes": {"site": "A", "age": 3}, "mask": torch.ones(64, 64)}
        if index % 2:
            boxes = tv_tensors.BoundingBoxes([[8, 16, 24, 48]], format="XYXY", canvas_size=(64, 64))
            return {**item, "mask": boxes}
        mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
        mask[0, 10:30, 20:40] = 7
        return {**item, "mask": mask, "id": f"shape-{index}"}


def test_items_are_checked_and_completed():
    wrapped = as_audit_dataset(Shapes())
    assert isinstance(wrapped, WrappedDataset) and wrapped.attributes == ("site",)
    first, second = wrapped[0], wrapped[1]
    assert first["id"] == "shape-0" and first["mask"].shape == (64, 64) and first["mask"].sum() == 400
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[16:48, 8:24] = True
    assert second["id"] == "1" and torch.equal(second["mask"], expected)
    assert (wrapped[2]["status"], wrapped[2]["reason"], wrapped[2]["id"]) == (
        "error",
        "camera file unreadable",
        "cam-2",
    )
    assert wrapped[4]["reason"] == "dataset item 4: 'mask' has shape (32, 32) but the image is (64, 64) (H, W)"
    assert wrapped[5]["reason"] == "dataset item 5: attribute 'age' is not one of the dataset's attributes ['site']"


def test_a_custom_dataset_is_audited_with_its_faults(demo_model):
    model, info = demo_model
    result = audit(model, Shapes(), AuditSettings(batch_size=4), model_info=info, progress=False)
    samples = result.samples
    assert list(samples["id"]) == ["shape-0", "1", "cam-2", "3", "4", "5"]
    assert list(samples["status"]) == ["ok", "ok", "error", "ok", "error", "error"]
    assert samples.loc[samples["status"] == "ok", "subject_share"].between(0, 1).all()
    assert list(samples["site"]) == ["A", "B", "unknown", "B", "A", "A"]  # the fault item has no attributes


def test_a_label_is_required():
    class NoLabel(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> dict:
            return {"image": torch.zeros(3, 4, 4), "mask": torch.ones(4, 4)}

    with pytest.raises(InputError, match=r"^NoLabel item 0: no 'label'$"):
        as_audit_dataset(NoLabel())[0]
