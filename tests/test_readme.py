"""The README's quick start is what CI runs: the test command must appear verbatim in .ci/run."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_stays_short_and_every_relative_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split()) <= 1500
    for page in [*PAGES, "docs/walkthrough.md", "docs/scaling.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / page).read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert ((ROOT / page).parent / target).exists(), f"{page} links to {target}, which does not exist"


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_command():
    commands = quick_start_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "examples/mnist_conv.py" in main_job and "pytest" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


PAGES = ["README.md", *(f"docs/{name}.md" for name in ("examples", "cpu", "runs", "interop", "processes", "gpu",
                                                          "testing"))]  # the README and the pages it links to


@pytest.mark.parametrize("page", PAGES)
def test_example_commands_are_valid(examples, monkeypatch, page):
    """Every `python examples/<file>.py --flags` line of the page parses (an unknown flag would exit)."""
    import shlex
    text = (ROOT / page).read_text()
    commands = re.findall(r"^ *(?:\.venv/bin/)?python3? (examples/\w+\.py[^\n#`]*)", text, re.M)
    if page == "README.md":
        assert len(commands) >= 3
    import tinyflux as tf
    # the flags are checked, not the machine: --video-dir is refused where PyAV is missing, --device gpu
    # where CuPy is, --device xpu where dpnp is
    monkeypatch.setattr(tf.data.video, "available", lambda: True)
    monkeypatch.setattr(tf.train.flags, "cupy_available", lambda: True)
    monkeypatch.setattr(tf.train.flags, "dpnp_module", lambda: object())
    for command in commands:
        script, *flags = shlex.split(command)
        example = examples(Path(script).stem)
        if hasattr(example, "parse_args"):
            example.parse_args(flags)
        else:  # examples/own_model.py: its flags are those of its Args
            tf.train.parse(example.Args, script, flags)
