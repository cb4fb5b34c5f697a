"""docs/walkthrough.md runs: every code block in it is checked here, in order, like the cells of a notebook.

Three kinds of fenced block:

- ```python blocks whose first line is ``# examples/<file>.py``: the example's own code.
  The rest of the block must appear word for word in that file, so the document
  cannot drift from it. Blocks of whole top-level definitions are also executed,
  into a namespace that starts as the example module's globals, and become the
  functions the following blocks call; a fragment from inside a function (the
  loop body, say) is only compared, and runs when the example itself runs.
  A block whose first line is ``# tinyflux/<path>.py`` quotes the library the same
  way; it is compared only (the suite tests the library itself).
- other ```python blocks: doctest sessions (``>>>`` lines and their expected
  output), run in the namespace of the example quoted last.
- ```text blocks: printed output to look at (a log), or commands to type. A
  command line ``python examples/<file>.py --flags`` is checked by handing its
  flags to that example's ``parse_args`` (which exits on an unknown flag or a
  bad value); running it would take minutes, and CI runs the examples anyway.

Any other kind of block fails the test, so nothing in the document escapes checking.
"""
from __future__ import annotations

import __future__
import doctest
import re
import shlex
from pathlib import Path

import pytest

import tinyflux as tf

ROOT = Path(__file__).resolve().parent.parent
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXCERPT = re.compile(r"# (examples/\w+\.py)\n")
LIBRARY_EXCERPT = re.compile(r"# (tinyflux/[\w/]+\.py)\n")


def blocks():
    """(line number, language, text) of every fenced block in the walkthrough."""
    source = WALKTHROUGH.read_text(encoding="utf-8")
    for match in FENCE.finditer(source):
        yield source.count("\n", 0, match.start()) + 2, match.group(1), match.group(2)


def test_walkthrough_has_only_checked_kinds_of_blocks():
    kinds = {language for _, language, _ in blocks()}
    assert kinds <= {"python", "text"}, f"unchecked code blocks: {kinds - {'python', 'text'}}"
    assert sum(1 for _, language, _ in blocks() if language == "python") >= 20


def test_walkthrough_commands_are_valid(examples, monkeypatch):
    # the flags are checked, not the machine: --video-dir is refused where PyAV is missing
    monkeypatch.setattr(tf.data.video, "available", lambda: True)
    commands = []
    for _, language, text in blocks():
        if language == "text":
            commands += [line.split("#")[0] for line in text.splitlines() if line.startswith("python examples/")]
    assert commands, "the walkthrough shows how to run the example"
    for command in commands:
        _, script, *flags = shlex.split(command)
        examples(Path(script).stem).parse_args(flags)  # SystemExit (a failure here) on a bad flag


def test_walkthrough_runs(examples):
    namespaces: dict[str, dict] = {}
    current = "examples/mnist_conv.py"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []  # every failing block is reported, not only the first
    for line, language, text in blocks():
        if language != "python":
            continue
        where = f"{WALKTHROUGH.name}, block at line {line}"
        library = LIBRARY_EXCERPT.match(text)
        if library:
            if text[library.end():] not in (ROOT / library.group(1)).read_text(encoding="utf-8"):
                failures.append(f"{where}: not word for word in {library.group(1)}")
            continue
        excerpt = EXCERPT.match(text)
        if excerpt:
            current = excerpt.group(1)
            code = text[excerpt.end():]
            if code not in (ROOT / current).read_text(encoding="utf-8"):
                failures.append(f"{where}: not word for word in {current}")
                continue
            if current not in namespaces:
                namespaces[current] = dict(vars(examples(Path(current).stem)))
            if not code.startswith((" ", "\t")):  # whole definitions: run them, a fragment only compares
                exec(compile(code, where, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True),
                     namespaces[current])
            continue
        assert text.lstrip().startswith(">>>"), f"{where}: a python block is an excerpt or a doctest session"
        if current not in namespaces:
            namespaces[current] = dict(vars(examples(Path(current).stem)))
        test = doctest.DocTestParser().get_doctest(text, namespaces[current], where, str(WALKTHROUGH), line)
        report: list[str] = []
        if runner.run(test, out=report.append, clear_globs=False).failed:
            failures.append("".join(report))
        namespaces[current].update(test.globs)  # names the session defined are there for the next blocks
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def test_the_core_path_is_marked_short_and_starts_by_building_it_yourself():
    """Part I, the core path a beginner finishes, stays at most 7,000 words (code and answers included); it
    opens with the scalar autograd, and the loop-written convolution exercise is in it (run above)."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    core, further = text.split("\n# Part II: going further\n")
    assert "\n# Part I: the core path\n" in core
    assert len(core.split()) <= 7000, f"the core path has {len(core.split())} words"
    sections = re.findall(r"^## (\d+)\. (.+)$", core, re.MULTILINE)
    assert sections[0] == ("1", "Build it yourself first: autograd in 30 lines")
    assert "def loop_conv_backward" in core and "def loop_maxpool_backward" in core
    assert [int(number) for number, _ in sections] == list(range(1, len(sections) + 1))
