"""The import contract of the data flow (pyproject ``[tool.importlinter]``): it holds, it covers
every top-level module, and it fails when a module imports against the flow."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

import auditcam

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers"
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_top_level_module_sits_in_a_layer():
    modules = {f"auditcam.{m.name}" for m in pkgutil.iter_modules(auditcam.__path__)} - {"auditcam.__main__"}
    assert modules == set(_layers())


def test_the_package_follows_its_data_flow():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_an_import_against_the_flow_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "auditcam", tmp_path / "auditcam", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    scoring = tmp_path / "auditcam" / "scoring.py"
    scoring.write_text(scoring.read_text(encoding="utf-8") + "\nimport auditcam.report  # noqa\n", encoding="utf-8")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "auditcam.scoring is not allowed to import auditcam.report" in proc.stdout
