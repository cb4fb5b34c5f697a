"""The README's quick start is what CI runs: the test command must appear verbatim in .ci/run."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_command():
    commands = quick_start_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "examples/mnist_conv.py" in main_job and "pytest" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_readme_example_commands_are_valid(examples, monkeypatch):
    """Every `python examples/<file>.py --flags` line in the README parses (an unknown flag would exit)."""
    import shlex
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(?:\.venv/bin/)?python3? (examples/\w+\.py[^\n#`]*)", readme, re.M)
    assert len(commands) >= 3
    import tinyflux as tf
    # the flags are checked, not the machine: --video-dir is refused where PyAV is missing
    monkeypatch.setattr(tf.data.video, "available", lambda: True)
    for command in commands:
        script, *flags = shlex.split(command)
        example = examples(Path(script).stem)
        if hasattr(example, "parse_args"):
            example.parse_args(flags)
        else:  # examples/own_model.py: its flags are those of its Args
            tf.train.parse(example.Args, script, flags)
