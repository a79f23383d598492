"""The built wheel carries the report templates and renders a report once installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("auditcam-*.whl")
    return path


def test_wheel_contains_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "auditcam/templates/report.html.j2" in names
    assert "auditcam/templates/report.css" in names
    assert "auditcam/templates/compare.html.j2" in names
    assert "auditcam/templates/report.js" in names and "auditcam/templates/base.html.j2" in names
    assert "auditcam/templates/partials/verdict.html.j2" in names
    assert "auditcam/templates/featuremaps.html.j2" in names
    assert {f"auditcam/templates/sections/{k}.html.j2" for k in ("counterfactual", "sanity", "featuremaps")} <= set(
        names
    )
    assert "auditcam/schemas/summary.schema.json" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_renders_a_report(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = textwrap.dedent(
        """
        import sys, torch
        import auditcam
        from auditcam.demo import MODEL_SPEC, write_split
        from auditcam.demo.synthetic import CLASSES, make_split
        from auditcam.models import load_model_info
        from auditcam.report.templates import template_dir

        site = sys.argv[1]
        assert auditcam.__file__.startswith(site), auditcam.__file__
        assert str(template_dir()).startswith(site), template_dir()
        manifest = write_split(make_split(4, agreement={"A": 0.0, "B": 0.0}), __import__("pathlib").Path("data"))
        torch.manual_seed(0)
        model, info = load_model_info(MODEL_SPEC)
        dataset = auditcam.LabelledDataset.from_manifest(manifest, classes=CLASSES)
        paths = auditcam.audit(model, dataset, model_info=info, progress=False).write("out")
        print(paths["report.html"].stat().st_size)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 1000
    assert "<!DOCTYPE html>" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
