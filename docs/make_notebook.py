"""The walkthrough as a Jupyter notebook you can run cell by cell.

    pip install -e '.[notebook]'            # jupytext, and Jupyter Notebook (the notebook package, with its
                                            # Python kernel, ipykernel)
    python docs/make_notebook.py            # writes docs/walkthrough.ipynb
    jupyter notebook docs/walkthrough.ipynb

jupytext reads docs/walkthrough.md as a notebook: its text becomes Markdown
cells and its Python blocks code cells. Three kinds of Python block need a
change to run in a notebook, and this script makes it:

- the Python sessions (``>>>`` lines with the output they print) become
  plain code without the output, so that the reader predicts it and then
  runs the cell; a session that shows an error runs inside
  ``try``/``except`` and prints it;
- the exercises' answers (inside ``<details>`` in the page) are code cells
  whose source and output Jupyter shows folded until the reader opens them
  (the cell metadata ``jupyter.source_hidden`` and ``outputs_hidden``);
- a fragment quoted from inside a function of an example (the loop body, say)
  cannot run on its own, and a quote of the library (``# tinyflux/...``) is
  already imported: both stay visible, as Markdown;
- a first cell sets things up as the walkthrough says a reader should
  (``from mnist_conv import *``, with the examples folder found from docs/),
  and the video section gets its own ``from video_conv import *``.

tests/test_notebook.py runs every code cell of the result, top to bottom, in
a fresh Python process started in docs/.
"""
from __future__ import annotations

import doctest
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETUP = '''# Setup: the examples folder is beside docs/; its modules bring np, tf, nn, optim and the example's functions
import os, sys
sys.path.insert(0, os.path.abspath(os.path.join(os.getcwd(), "..", "examples")))
from mnist_conv import *'''


def session_as_code(text: str) -> str:
    """A ``>>>`` session as plain code without its output; an expected error caught and printed."""
    lines = []
    for example in doctest.DocTestParser().get_examples(text):
        source = example.source.rstrip("\n")
        if example.exc_msg is not None:  # the session shows this error: catch it, as the reader would see it
            body = "\n".join("    " + line for line in source.splitlines())
            lines.append(f"try:\n{body}\nexcept Exception as error:\n    print(type(error).__name__ + ':', error)")
        else:
            lines.append(source)
    return "\n".join(lines)


def notebook(markdown: Path = HERE / "walkthrough.md"):
    """The walkthrough as an nbformat notebook, ready to run."""
    import jupytext
    from nbformat.v4 import new_code_cell, new_markdown_cell

    book = jupytext.read(markdown, fmt="md")
    cells, video_setup_done, in_answer = [new_code_cell(SETUP)], False, False
    for cell in book.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            if "<details>" in cell.source or "</details>" in cell.source:  # an answer opens (or closes) here
                in_answer = cell.source.rfind("<details>") > cell.source.rfind("</details>")
            continue
        text = cell.source
        if text.startswith("# tinyflux/"):
            cells.append(new_markdown_cell(f"```python\n{text}\n```"))
        elif text.startswith("# examples/"):
            code = text.split("\n", 1)[1] if "\n" in text else ""
            if text.startswith("# examples/video_conv.py") and not video_setup_done:
                cells.append(new_code_cell("from video_conv import *  # from here on, the video example's functions"))
                video_setup_done = True
            if code[:1] in (" ", "\t"):  # a fragment from inside a function: shown, not run
                cells.append(new_markdown_cell(f"```python\n{text}\n```"))
            else:
                cells.append(new_code_cell(text))
        elif text.lstrip().startswith(">>>"):
            cells.append(new_code_cell(session_as_code(text)))
        else:
            cells.append(cell)
        if in_answer:  # folded until the reader opens it
            cells[-1].metadata["jupyter"] = {"source_hidden": True, "outputs_hidden": True}
    book.cells = cells
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    return book


if __name__ == "__main__":
    import nbformat
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "walkthrough.ipynb"
    nbformat.write(notebook(), target)
    print(target)
