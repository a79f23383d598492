"""Fixtures that write small image/mask datasets to a temporary folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_pair(folder: Path, name: str, size: tuple[int, int] = (24, 32), box=(4, 8, 12, 20)) -> tuple[str, str]:
    """An RGB image (H, W = size) with a red box subject on grey, and its 0/255 mask."""
    h, w = size
    image = np.full((h, w, 3), 128, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = (255, 0, 0)
    mask[y0:y1, x0:x1] = 255
    (folder / "images").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    return f"images/{name}.png", f"masks/{name}.png"


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Three good samples with a ``site`` attribute (one left empty)."""
    rows = []
    for i, (label, site) in enumerate([("0", "A"), ("1", "B"), ("1", "")]):
        image, mask = write_pair(tmp_path, f"s{i}")
        rows.append({"image": image, "mask": mask, "label": label, "site": site})
    write_manifest(tmp_path / "manifest.csv", rows)
    return tmp_path


def save_exif_rotated_jpeg(path: Path, raw: np.ndarray, orientation: int = 6) -> None:
    """A JPEG whose stored pixels are ``raw`` and whose EXIF says to rotate them for display."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(raw).save(path, "JPEG", quality=95, exif=exif)


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    """A Parquet manifest written with pyarrow (nulls stay nulls, ints stay ints)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path
