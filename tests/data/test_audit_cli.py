"""``auditcam audit`` over the data options: Parquet with null attributes, resized masks noted in
samples.parquet and the report, decoding in two worker processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from auditcam import cli
from auditcam.demo import MODEL_SPEC


def test_parquet_resized_masks_and_workers_reach_the_outputs(small_dataset, tmp_path, capsys):
    torch.manual_seed(0)  # the untrained model's init decides whether any heatmap is all zero
    manifest, _classes = small_dataset
    folder = manifest.parent
    frame = pd.read_csv(manifest, dtype=str)
    frame["skin_tone"] = ["I", None, "VI", np.nan] * 3
    half = np.asarray(Image.open(folder / frame.loc[0, "mask"]))[::2, ::2]
    Image.fromarray(half).save(folder / "masks" / "half.png")
    frame.loc[0, "mask"] = "masks/half.png"
    frame.to_parquet(folder / "manifest.parquet")
    out = tmp_path / "out"
    argv = ["audit", "--model", MODEL_SPEC, "--data", str(folder / "manifest.parquet"), "--out", str(out)]
    argv += ["--classes", str(folder / "classes.txt"), "--resize-masks", "--workers", "2", "--no-progress"]
    assert cli.main(argv) in (cli.EXIT_PASS, cli.EXIT_FAIL)
    capsys.readouterr()
    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples["skin_tone"]) == ["I", "unknown", "VI", "unknown"] * 3
    assert list(samples["site"]) == list(frame["site"])
    note = "mask resized from 32x32 to 64x64 (WxH, nearest)"
    assert list(samples["note"]) == [note] + [""] * 11
    assert samples.loc[0, "status"] == "ok", samples.loc[0, "reason"]
    assert not samples["reason"].str.contains("mask").any()
    assert note in (out / "report.html").read_text(encoding="utf-8")
