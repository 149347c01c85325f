"""The notebooks in notebooks/: the index below, committed without outputs, and executed.

Static checks (always): every notebook in the folder is in :data:`NOTEBOOKS` and the reverse;
no code cell holds outputs or an execution count, in the working tree and in git's index; the
first cell is the install check, silent when convgrad imports and printing the instruction when
it does not.

Execution (when ``nbclient`` and ``ipykernel`` are installed: ``pip install -e '.[notebooks]'``):
each notebook runs top to bottom in a fresh ``python3`` kernel started from this interpreter,
with this process's ``convgrad`` first on the kernel's path, MNIST from the cache and
``CONVGRAD_OFFLINE=1`` (no network while it runs), within :data:`TIMEOUT_S` seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import convgrad

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebooks"

#: Every notebook, in reading order, with what it shows (kept here, independent of the README).
NOTEBOOKS: dict[str, str] = {
    "01-convolution.ipynb": "convolution as a sum, equivariance, output sizes, the two Jacobians",
    "02-engine.ipynb": "Deep MNIST: counts, gradient check, training steps, dead ReLUs, affine map",
    "03-mnist.ipynb": "data, curves, 250 examples, dropout, size vs accuracy, pictures of a run",
    "04-digit-sum.ipynb": "weight sharing, the slow linear head, the lab's sum-distribution head",
}

#: Seconds one notebook may take, all cells together (each is meant to take under 3 minutes on
#: 2 idle cores; this leaves room for a busy CI machine).
TIMEOUT_S = 300

EXTRA_HINT = "pip install -e '.[notebooks]' (the convgrad[notebooks] extra)"


def _load(name: str) -> dict:
    return json.loads((FOLDER / name).read_text(encoding="utf-8"))


def _dirty_cells(notebook: dict) -> list[str]:
    """One line per code cell that holds outputs or an execution count."""
    problems = []
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {number}: {len(cell['outputs'])} outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {number}: execution_count {cell['execution_count']}")
    return problems


def test_index_lists_every_notebook_in_the_folder():
    present = sorted(path.name for path in FOLDER.glob("*.ipynb"))
    assert present == sorted(NOTEBOOKS), (
        f"notebooks/ holds {present}, the index in tests/test_notebooks.py lists "
        f"{sorted(NOTEBOOKS)}: add or remove the entry"
    )


def test_dirty_cells_are_detected():
    clean = {"cells": [{"cell_type": "code", "outputs": [], "execution_count": None},
                       {"cell_type": "markdown", "source": "x"}]}
    dirty = {"cells": [{"cell_type": "code", "execution_count": 3,
                        "outputs": [{"output_type": "stream", "text": "1"}]}]}
    assert _dirty_cells(clean) == []
    assert _dirty_cells(dirty) == ["cell 0: 1 outputs", "cell 0: execution_count 3"]


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(name):
    assert _dirty_cells(_load(name)) == [], f"{name}: clear the outputs before committing"
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return  # not a git checkout (an sdist): the working tree is all there is
    staged = subprocess.run([git, "show", f":notebooks/{name}"], cwd=ROOT, capture_output=True,
                            text=True)
    if staged.returncode != 0:
        pytest.fail(f"notebooks/{name} is not in git's index: git add it")
    assert _dirty_cells(json.loads(staged.stdout)) == [], (
        f"notebooks/{name} in git's index holds outputs: clear them and git add it again"
    )


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_first_cell_is_the_install_check(name, monkeypatch):
    notebook = _load(name)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    first = notebook["cells"][0]
    assert first["cell_type"] == "code"
    source = "".join(first["source"])
    assert "import convgrad" in source and "except ImportError" in source
    assert "pip install -e" in source  # the instruction
    commands = [line.strip() for line in source.splitlines()
                if line.strip().startswith(("%pip", "!pip", "%conda", "!conda"))]
    assert commands == [], f"the first cell must not install anything itself: {commands}"

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        exec(compile(source, f"{name}[0]", "exec"), {})
    assert quiet.getvalue() == "", "the first cell must do nothing when convgrad imports"

    monkeypatch.setitem(sys.modules, "convgrad", None)  # import convgrad -> ImportError
    told = io.StringIO()
    with contextlib.redirect_stdout(told):
        exec(compile(source, f"{name}[0]", "exec"), {})
    assert "pip install -e" in told.getvalue(), told.getvalue()


@pytest.fixture(scope="module")
def kernel_environment():
    """nbclient and ipykernel, MNIST in the cache, and the environment for the kernel."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed; the notebooks run with {EXTRA_HINT}")
    from convgrad.data import fetch

    fetch("mnist")  # a cache hit, or the first fetch of this machine (as the data tests do)
    source_root = str(Path(convgrad.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": source_root + (os.pathsep + path if path else ""),
        "CONVGRAD_OFFLINE": "1",
        "MPLBACKEND": "agg",
    }


@pytest.mark.network
@pytest.mark.notebooks
@pytest.mark.timeout(TIMEOUT_S + 120)
@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, kernel_environment, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in kernel_environment.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(FOLDER / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import sys, convgrad\nprint(sys.executable + '\\n' + convgrad.__file__, flush=True)"
    ))
    client = NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(FOLDER)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    assert elapsed < TIMEOUT_S, f"{name} took {elapsed:.0f} s, over {TIMEOUT_S} s"

    outputs = notebook.cells[-1].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout").split()
    assert len(printed) == 2, f"the kernel's path check printed {outputs}"
    kernel_python, kernel_convgrad = printed
    assert Path(kernel_convgrad).resolve() == Path(convgrad.__file__).resolve(), (
        f"the kernel imported {kernel_convgrad}, the tests {convgrad.__file__}"
    )
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.get("output_type") == "error"]
    assert errors == []
