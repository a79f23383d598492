"""The quickstart notebook runs top to bottom on the CPU and tells the story it promises; the
committed copy carries no outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
OUTPUT = "quickstart-output"  # the notebook's OUT folder, relative to where it runs
# seconds per cell: a hang guard, not a speed test (~30 s in all on two quiet cores, minutes under load)
TIMEOUT = 600


def kernel_manager() -> AsyncKernelManager:
    """A kernel of the Python running this test: no kernel spec directories are searched, so
    ipykernel's built-in ``python3`` spec (``sys.executable -m ipykernel_launcher``) is used, never
    a ``python3`` spec a user or the system installed for another interpreter."""
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


@pytest.mark.slow
def test_quickstart_runs_and_shows_the_shortcut(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(), timeout=TIMEOUT, resources={"metadata": {"path": str(tmp_path)}})
    # raises CellExecutionError on the first cell that errors; shuts the kernel down in any case
    client.execute(cleanup_kc=True)

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # samples and heatmap overlays
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "shortcut: FAILED" in printed

    out = tmp_path / OUTPUT
    summaries = {}
    for name in ("shortcut", "clean"):
        for file in ("report.html", "summary.json", "junit.xml", "samples.parquet"):
            assert (out / name / file).stat().st_size > 0
        assert (out / name / "report.html").resolve().as_uri() in printed
        summaries[name] = json.loads((out / name / "summary.json").read_text(encoding="utf-8"))
    share = {name: s["aggregates"]["gradcam"]["overall"]["subject_share_mean"] for name, s in summaries.items()}
    assert share["shortcut"] < 0.5 * share["clean"], share
    outcomes = {name: {check["name"]: check["outcome"] for check in s["checks"]} for name, s in summaries.items()}
    # the background shortcut has no compact spot: the location test has nothing to occlude
    assert outcomes["shortcut"] == {
        "background_reliant_rate": "fail",
        "mean_subject_share": "fail",
        "location_shortcut": "not applicable",
    }, outcomes
    assert outcomes["clean"]["mean_subject_share"] == "pass", outcomes


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs: clear them before committing"
