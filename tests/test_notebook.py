"""docs/make_notebook.py: the walkthrough as a notebook runs, every code cell in order, in a fresh Python process.

The process starts in docs/, where a reader's Jupyter would run the notebook, with nothing but the setup
cell that the notebook itself begins with (the one the walkthrough tells a reader to type)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RUN_CELLS = """
import json, sys, traceback
cells = [c for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"]
namespace = {"__name__": "__main__"}
for number, cell in enumerate(cells):
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    try:
        exec(compile(source, f"<cell {number}>", "exec"), namespace)
    except BaseException:
        print(f"cell {number} failed:\\n{source}\\n", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
print(f"{len(cells)} code cells ran")
"""


def test_the_walkthrough_runs_as_a_notebook_from_top_to_bottom(tmp_path):
    pytest.importorskip("jupytext", reason="jupytext is not installed (pip install jupytext)")
    import nbformat
    spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "docs" / "make_notebook.py")
    make_notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_notebook)
    path = tmp_path / "walkthrough.ipynb"
    nbformat.write(make_notebook.notebook(), path)
    book = json.loads(path.read_text())
    assert book["cells"][0]["cell_type"] == "code" and "from mnist_conv import *" in "".join(book["cells"][0]["source"])
    assert book["metadata"]["kernelspec"]["name"] == "python3"  # Jupyter opens it with a Python kernel, unasked
    code = [cell for cell in book["cells"] if cell["cell_type"] == "code"]
    hidden = [cell for cell in code if cell["metadata"].get("jupyter", {}).get("source_hidden")]
    assert len(hidden) == (ROOT / "docs" / "walkthrough.md").read_text().count("<summary>Answer</summary>")
    # a session's expected output is not written into its cell: the reader predicts it, then runs the cell
    session = next("".join(cell["source"]) for cell in code if "args.lr, args.epochs, args.batch_size" in "".join(cell["source"]))
    assert "(0.003, 5, 128)" not in session
    done = subprocess.run([sys.executable, "-c", RUN_CELLS, str(path)], cwd=ROOT / "docs", capture_output=True,
                          text=True, timeout=600, env={"PATH": "", "HOME": str(tmp_path), "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "code cells ran" in done.stdout
