"""A small audit written by the CLI, shared by the tracker tests."""

from __future__ import annotations

import pytest

from auditcam.demo import MODEL_SPEC


@pytest.fixture
def audit_argv(small_dataset, tmp_path):
    """``auditcam audit`` of the untrained demo CNN on 12 samples, fast settings; add ``--log``."""
    manifest, _classes = small_dataset
    return [
        "audit",
        "--model",
        MODEL_SPEC,
        "--data",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--bootstrap",
        "50",
        "--min-group-size",
        "2",
        "--gallery-size",
        "2",
    ]
