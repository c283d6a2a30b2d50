"""The research notebooks under notebooks/ run top to bottom without an error.

Each notebook is executed with nbclient in a fresh kernel that runs on this
interpreter (a kernelspec written for the test, so a user-wide ``python3``
kernelspec cannot send it to another Python), offline and headless, from the
notebooks folder. A first injected cell checks the kernel's interpreter and
installs the same network guard as tests/conftest.py inside the kernel process.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"  # what the notebooks name in their metadata
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}

# Runs first in every kernel: the interpreter must be this one, and the network is
# guarded as in the test process (pyzmq's own sockets are not Python sockets).
_SETUP_CELL = """\
import json as _json, os as _os, socket as _socket, sys as _sys
_expected = {prefix!r}
if _os.path.realpath(_sys.prefix) != _expected:
    raise RuntimeError(f"kernel runs {{_sys.executable}} (prefix {{_sys.prefix}}), expected prefix {{_expected}}")
_sys.path.insert(0, {repo!r})
try:
    from tests.conftest import _guarded_connect, _guarded_connect_ex
finally:
    _sys.path.pop(0)
_socket.socket.connect = _guarded_connect
_socket.socket.connect_ex = _guarded_connect_ex
print(_json.dumps({{"executable": _sys.executable, "prefix": _sys.prefix}}))
"""


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory) -> Path:
    """A ``python3`` kernelspec for this interpreter (absolute path) in a private Jupyter data folder."""
    from ipykernel.kernelspec import write_kernel_spec

    data_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    write_kernel_spec(spec_dir, overrides={"env": KERNEL_ENV, "display_name": "Python 3 (medseg test)"})
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable, spec["argv"]
    return data_dir


def _execute(path: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nb = nbformat.read(path, as_version=4)
    setup = _SETUP_CELL.format(prefix=os.path.realpath(sys.prefix), repo=str(REPO_ROOT))
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    # our kernelspec comes first; runtime files and the IPython profile stay in the tmp folder
    monkeypatch.setenv("JUPYTER_PATH", str(data_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(data_dir / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(data_dir / "ipython"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # a notebook's temporary folders, even if it fails half-way
    for key, value in KERNEL_ENV.items():
        monkeypatch.setenv(key, value)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    spec = client.create_kernel_manager().kernel_spec  # the client still owns (and shuts down) the kernel
    assert Path(spec.resource_dir).resolve() == (data_dir / "kernels" / KERNEL_NAME).resolve(), spec.resource_dir
    client.execute()  # raises nbclient.exceptions.CellExecutionError on the first failing cell
    return nb


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def _pngs(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_notebooks_are_valid_and_committed_without_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"01_load_train_predict_evaluate.ipynb", "02_metrics_and_plots.ipynb",
                                           "03_general_images.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == KERNEL_NAME, path.name
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert not any(cell.outputs or cell.execution_count for cell in code), f"{path.name}: clear the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, venv_kernel, tmp_path, monkeypatch):
    nb = _execute(path, venv_kernel, tmp_path, monkeypatch)
    kernel = json.loads(_stdout(nb.cells[0]))
    assert os.path.realpath(kernel["prefix"]) == os.path.realpath(sys.prefix), kernel
    assert _pngs(nb) >= 1, f"{path.name} drew no figure"
    if path.name.startswith("01_"):
        pattern = re.compile(r"prediction shape \((\d+), (\d+), (\d+)\), input shape \((\d+), (\d+), (\d+)\)")
        matches = [m for m in (pattern.search(_stdout(c)) for c in nb.cells) if m]
        assert matches, "notebook 1 printed no 'prediction shape ..., input shape ...' line"
        shapes = matches[-1].groups()
        assert shapes[:3] == shapes[3:] == ("40", "40", "24"), shapes
    if path.name.startswith("03_"):
        printed = "".join(_stdout(c) for c in nb.cells)
        ours = re.search(r"evaluate-images: mIoU ([0-9.]+)", printed)
        logged = re.search(r"validation mIoU logged by the run: ([0-9.]+)", printed)
        assert ours and logged and ours.group(1) == logged.group(1), printed[-500:]
        assert re.search(r"evaluate-images --task instance: mask AP [0-9.]+", printed), printed[-500:]
        assert _pngs(nb) >= 7, "notebook 3: samples, curves, IoU bars and overlays; YOLO curves, AP bars, overlays"
