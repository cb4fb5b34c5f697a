"""Run folders (tinyflux/train/runs.py) and the examples' run lifecycle: no run replaces another's files unasked,
one run per folder, divergence is an error, and an interrupted run resumes exactly.

Most tests call the example's train() in this process on the tiny fake MNIST; the interruption tests
run the example as a real command in a child process and stop it with SIGINT or SIGKILL."""
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tinyflux as tf
from tinyflux.train.runs import DivergedError, RunFolder, RunFolderError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example(examples):
    return examples("mnist_conv")


def quick_args(example, fake_mnist, folder, **changes):
    return example.Args(**{"epochs": 2, "batch_size": 16, "max_steps": 2, "data_dir": str(fake_mnist),
                           "savepath": str(folder), "device": "cpu", **changes})


def no_data(args):
    raise AssertionError("the data was loaded before the run folder was checked")


# -- nothing is replaced without being asked --------------------------------------------------------------
def test_a_rerun_is_refused_before_loading_data_and_keeps_the_best_model(example, fake_mnist, tmp_path):
    args = quick_args(example, fake_mnist, tmp_path / "run")
    example.train(args)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert sorted(before) == ["mnist_conv.h5", "mnist_conv.state.h5"]  # and no lock file once it ended
    with pytest.raises(RunFolderError) as info:
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=1), get_data=no_data)
    message = str(info.value)
    assert "already holds an earlier run (mnist_conv.h5, mnist_conv.state.h5)" in message
    assert "--resume" in message and "--force" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_force_starts_over(example, fake_mnist, tmp_path, caplog):
    example.train(quick_args(example, fake_mnist, tmp_path / "run", seed=1))
    with caplog.at_level(logging.INFO):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=1, force=True))
    assert "--force: deleted" in caplog.text
    assert tf.checkpoint.read_metadata(tmp_path / "run" / "mnist_conv.state.h5")["epoch"] == 1
    assert tf.checkpoint.read_metadata(tmp_path / "run" / "mnist_conv.h5")["epoch"] == 1


@pytest.mark.parametrize("flags, message", [
    ({"resume": True}, "has no saved run state (mnist_conv.state.h5); it holds no earlier run"),
    ({"resume": True, "force": True}, "resume and force exclude each other"),
])
def test_resume_needs_a_saved_state(example, fake_mnist, tmp_path, flags, message):
    with pytest.raises(RunFolderError, match=re.escape(message)):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", **flags), get_data=no_data)


def test_resume_with_other_settings_is_refused(example, fake_mnist, tmp_path):
    example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=1))
    with pytest.raises(RunFolderError) as info:
        example.train(quick_args(example, fake_mnist, tmp_path / "run", lr=1e-3, seed=4, resume=True),
                      get_data=no_data)
    assert "--lr: the run used 0.003, now 0.001" in str(info.value)
    assert "--seed: the run used 0, now 4" in str(info.value)


# -- one run per folder -----------------------------------------------------------------------------------
HOLD_THE_FOLDER = """
import sys, time
from tinyflux.train.runs import RunFolder
with RunFolder(sys.argv[1], "mnist_conv.h5"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_run_is_refused_and_a_dead_runs_lock_is_taken_over(example, fake_mnist, tmp_path, caplog):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_FOLDER, str(folder)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunFolderError, match=f"in use by another run \\(process {holder.pid} on "):
            example.train(quick_args(example, fake_mnist, folder), get_data=no_data)
    finally:
        holder.kill()  # SIGKILL: it cannot clean up, its lock file stays behind
        holder.wait()
    assert (folder / "tinyflux.lock").read_text().startswith(f"process {holder.pid} ")
    with caplog.at_level(logging.WARNING):
        example.train(quick_args(example, fake_mnist, folder, epochs=1))
    assert f"taking over the lock left by a run that is no longer running (process {holder.pid}" in caplog.text
    assert not (folder / "tinyflux.lock").exists()


def test_an_unwritable_savepath_fails_before_loading_data(example, fake_mnist, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunFolderError, match="cannot create the run folder"):
        example.train(quick_args(example, fake_mnist, tmp_path / "a-file" / "run"), get_data=no_data)


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint", ""], "--checkpoint: a file name inside --savepath expected"),
    (["--checkpoint", "sub/model.h5"], "--checkpoint: a file name inside --savepath expected"),
    (["--savepath", ""], "--savepath: a folder expected"),
    (["--lr", "nan"], "--lr: a positive finite learning rate expected, got nan"),
    (["--lr", "-1"], "--lr: a positive finite learning rate expected, got -1.0"),
    (["--resume", "--force"], "--resume and --force exclude each other"),
])
def test_bad_flags_fail_before_anything_runs(example, capsys, flags, message):
    with pytest.raises(SystemExit):
        example.parse_args(flags)
    assert message in capsys.readouterr().err


# -- divergence is an error -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverged_run_raises_and_saves_nothing_of_that_epoch(example, fake_mnist, tmp_path):
    with pytest.raises(DivergedError, match=r"\[1\]: training diverged \(mean loss nan.*no model was saved"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", lr=1e10))
    assert sorted(os.listdir(tmp_path / "run")) == []


def test_a_run_that_diverges_later_names_its_own_best_model(example, fake_mnist, tmp_path, monkeypatch):
    real_any_nan = tf.train.any_nan
    calls = iter([False, True])  # fine after epoch 1, NaN after epoch 2
    monkeypatch.setattr(tf.train.loop, "any_nan", lambda model: next(calls) or real_any_nan(model))
    with pytest.raises(DivergedError, match="its best model, from epoch 1, is in"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    assert tf.checkpoint.read_metadata(tmp_path / "run" / "mnist_conv.state.h5")["epoch"] == 1


# -- exact resume, in this process ------------------------------------------------------------------------
def run_lines(text, folder):
    """Log lines without their timings (which differ between runs) and with the run folder as <run>."""
    text = text.replace(str(folder), "<run>")
    return [re.sub(r"\d+\.\d s, \d+\.\d ms/step, ", "", line) for line in text.splitlines()
            if line.strip() and "Resuming" not in line]


def test_a_finished_run_continues_with_more_epochs_exactly(example, fake_mnist, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        whole = example.train(quick_args(example, fake_mnist, tmp_path / "whole", epochs=4, shuffle=True))
    whole_log = run_lines(caplog.text, tmp_path / "whole")
    caplog.clear()
    example.train(quick_args(example, fake_mnist, tmp_path / "parts", epochs=2, shuffle=True))
    with caplog.at_level(logging.INFO):
        resumed = example.train(quick_args(example, fake_mnist, tmp_path / "parts", epochs=4, shuffle=True,
                                           resume=True))
    assert "Resuming the run in" in caplog.text and "after epoch 2" in caplog.text
    resumed_log = run_lines(caplog.text, tmp_path / "parts")[3:]  # after Loading, Building and Beginning training loop
    assert "[3]: mean training loss" in resumed_log[0]
    assert resumed_log == whole_log[-len(resumed_log):]  # epochs 3 and 4, line for line
    assert resumed.train_loss == whole.train_loss and resumed.test_accuracy == whole.test_accuracy
    for name in ("mnist_conv.h5", "mnist_conv.state.h5"):
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_resuming_a_run_that_had_stopped_trains_nothing(example, fake_mnist, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tf.train, "accuracy", lambda *a, **k: 0.9995)  # the target: early exit after epoch 1
    example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=3))
    with caplog.at_level(logging.INFO):
        history = example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=3, resume=True))
    assert "That run had already stopped (reached the target accuracy)" in caplog.text
    assert "[2]:" not in caplog.text and history.test_accuracy == [0.9995]


# -- interrupted for real: SIGINT (Ctrl-C) and SIGKILL ----------------------------------------------------
def start_example(example_command, folder, *flags):
    command = example_command("--epochs", "3", "--batch-size", "32", "--device", "cpu", "--savepath", str(folder),
                              *flags)
    env = {**os.environ, "TINYFLUX_DATA": str(folder.parent / "cache")}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for(path, seconds=60):
    import time
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def finish(process):
    out, _ = process.communicate(timeout=300)
    return process.returncode, out


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_run_resumes_to_the_same_log_and_best_checkpoint(example_command, tmp_path, how):
    status, whole = finish(start_example(example_command, tmp_path / "whole"))
    assert status == 0, whole

    folder = tmp_path / "interrupted"
    process = start_example(example_command, folder)
    first = []
    for line in process.stdout:  # wait for the first epoch's result, then interrupt the second epoch
        first.append(line)
        if "[1]: Test accuracy" in line:
            if how == signal.SIGKILL:  # cannot be held back: wait until epoch 1 is saved, to kill epoch 2
                wait_for(folder / "mnist_conv.state.h5")
            process.send_signal(how)
            break
    status, rest = finish(process)
    first = "".join(first) + rest
    if how == signal.SIGINT:
        assert status == 130 and "Traceback" not in first, first
        assert "[ Error: Interrupted: the run is saved after epoch 1 in" in first
        assert "/examples/mnist_conv.py --data-dir " in first and "--epochs 3 --batch-size 32 --device cpu" in first
        assert first.rstrip().endswith("--resume")
    else:
        assert status == -signal.SIGKILL
    assert "[2]: Test accuracy" not in first  # it really stopped inside epoch 2

    status, resumed = finish(start_example(example_command, folder, "--resume"))
    assert status == 0, resumed
    assert "Resuming the run in" in resumed and "after epoch 1" in resumed
    if how == signal.SIGKILL:
        assert "taking over the lock left by a run that is no longer running" in resumed
    lines = run_lines(resumed, folder)
    tail = lines[lines.index("[ Info: Beginning training loop...") + 1:]  # epochs 2 and 3, then test()
    assert "[2]: mean training loss" in tail[0]
    assert tail == run_lines(whole, tmp_path / "whole")[-len(tail):]
    assert "accuracy(test_set, model) = " in tail[-1]
    assert (folder / "mnist_conv.h5").read_bytes() == (tmp_path / "whole" / "mnist_conv.h5").read_bytes()
    assert sorted(os.listdir(folder)) == ["mnist_conv.h5", "mnist_conv.state.h5"]


def test_a_diverged_command_exits_with_an_error_and_reports_no_accuracy(example_command, tmp_path):
    status, out = finish(start_example(example_command, tmp_path / "run", "--lr", "1e10"))
    assert status == 1 and "training diverged" in out and "accuracy(test_set" not in out
    assert "Traceback" not in out


def test_run_folder_refuses_a_path_as_checkpoint_name(tmp_path):
    with pytest.raises(ValueError, match="a plain file name"):
        RunFolder(tmp_path, "sub/model.h5")


def test_deferred_interrupt_holds_ctrl_c_until_the_block_ends():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with tf.train.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once: the handler only notes it
            steps.append("the block went on to its end")
    assert steps == ["the block went on to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_interrupt_leaves_an_ignored_sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with tf.train.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # and nothing was raised
    finally:
        signal.signal(signal.SIGINT, previous)
