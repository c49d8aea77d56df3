"""The notebooks in ``notebooks/``: committed without outputs, and run top to bottom on CPU.

Each notebook is copied to a temporary folder and executed there with nbclient. The kernel is
the interpreter running the tests (a kernel spec written to a temporary folder), so neither a
``jupyter kernelspec install`` nor a user-level kernel pointing at another Python is involved.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["quickstart.ipynb", "inside_the_model.ipynb"]
CHECKPOINT = ROOT / "tests" / "fixtures" / "parity" / "golden_shared_official_format.pt"
CELL_TIMEOUT_S = 120


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    raw = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert raw["nbformat"] == 4
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    dirty = [
        i for i, c in enumerate(raw["cells"])
        if c["cell_type"] == "code"
        and (c.get("outputs") or c.get("execution_count") is not None or "execution" in c.get("metadata", {}))
    ]
    assert not dirty, (
        f"{name}: cells {dirty} carry outputs, execution counts or timings; strip them before committing"
    )
    assert not any(c.get("attachments") for c in raw["cells"]), f"{name} carries cell attachments"
    assert "widgets" not in raw.get("metadata", {}), f"{name} carries widget state"


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """Kernel managers for a ``python3`` kernel spec that runs this interpreter's ipykernel."""
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path_factory.mktemp("kernels") / "python3"
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tmzoo tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable

    def make() -> KernelManager:
        return KernelManager(kernel_name="python3", kernel_spec_manager=specs)

    return make


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, kernel_manager_factory, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits this environment: the tiny released-format fixture, the inline
    # matplotlib backend (an MPLBACKEND=Agg from CI would swallow the figures), few threads
    monkeypatch.setenv("TMZOO_CHECKPOINT", str(CHECKPOINT))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # a copy in a folder outside the checkout: the notebook must find the repository itself
    work = tmp_path / "run"
    work.mkdir()
    shutil.copy(NOTEBOOKS / name, work / name)
    nb = nbformat.read(work / name, as_version=4)

    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager_factory(),
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [
        o for c in code for o in c.outputs
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert images, f"{name} produced no image output"
    # nothing was written next to the notebook but the notebook itself
    assert sorted(p.name for p in work.iterdir()) == [name]
