"""The benchmarks run and report what they say they report (no timing is asserted: they measure, tests don't)."""
import importlib.util
import subprocess
from pathlib import Path

import pytest

import tinyflux as tf

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_profile_splits_the_step_into_functions_and_backend_ops(capsys):
    conv_bench = load_benchmark("conv_bench")
    profiles = conv_bench.main(["--profile", "--rounds", "1", "--pause", "0"])
    assert [(p["model"], p["batch"]) for p in profiles] == [("MNIST", 128), ("video", 8), ("video", 32)]
    video_ops = profiles[1]["ops_ms"]
    numba_kernels = type(tf.backends.cpu_ops()).__name__ == "NumbaOps"
    if numba_kernels:
        # Numba's kernels: each 3-D convolution-pooling is one op, with no columns and no product
        assert video_ops["conv_pool"] > 0 and video_ops["conv_pool_backward"] > 0
        assert not any(key.startswith("matmul (8x81)") for key in video_ops)
    else:
        assert "matmul (8x81) @ (81x147968)" in video_ops  # the first 3-D layer on colour clips, batch 8
    profile = profiles[0]
    ops = profile["ops_ms"]
    functions = profile["parts_ms"]
    assert "ConvMaxPoolFunction.forward" in functions and "MaxPoolFunction.forward" not in functions
    products = [key for key in ops if key.startswith("matmul")]
    if numba_kernels:
        # numba_blocks: each convolution-pooling, with its bias and ReLU, is one op whose products run
        # inside it; the only products left to the ops object are the dense layer's
        assert ops["conv_pool"] > 0 and ops["conv_pool_backward"] > 0 and "BiasReLU.forward" not in functions
        assert products and all(key.endswith("x10)") or "(10x" in key or "x10 " in key for key in products)
    else:
        # the model runs each convolution with its pooling as one op, so these are what the step spends time in
        for name in ("im2col_pooled", "col2im_pooled", "maxpool_blocks", "maxpool_blocks_backward", "bias_relu"):
            assert ops[name] > 0, name
        # every matrix product of the step, by shape: 2 per convolution forward, 3 or 2 backward
        assert "matmul (32x144) @ (144x28672)" in products
    assert set(profile["matmul_gflops"]) == set(products)
    assert all(rate > 0 for rate in profile["matmul_gflops"].values())
    expected = "max-pooling: inside conv_pool" if numba_kernels else "max-pooling forward and backward together"
    assert expected in capsys.readouterr().out


def test_the_timer_rests_before_each_round_where_asked(monkeypatch):
    import timing
    slept = []
    monkeypatch.setattr(timing.time, "sleep", slept.append)
    timing.Timer(lambda: None, 0.15)(lambda: None, 3)
    timing.Timer(lambda: None)(lambda: None)
    assert slept == [0.15]  # once per round, before it; none without a pause


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git repository (it checks out a commit)")
def test_compare_commits_times_both_sides_and_removes_its_checkout():
    compare = load_benchmark("compare_commits")
    before = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    result = compare.main(["HEAD", "--rounds", "2", "--steps", "1", "--batch", "8"])
    assert result["rounds"] == 2 and result["new"] == "working tree"
    assert 0 < result["old_ms"]["min"] <= result["old_ms"]["max"]
    assert 0 < result["ratio_new_old"]["min"] <= result["ratio_new_old"]["median"] <= result["ratio_new_old"]["max"]
    after = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before


def test_the_default_report_and_the_sweep_run_on_one_round(capsys):
    conv_bench = load_benchmark("conv_bench")
    report = conv_bench.main(["--rounds", "1", "--steps", "1", "--pause", "0", "--no-torch"])
    assert [layer["layer"] for layer in report["layers"]] == ["conv1", "conv2", "conv3"]
    assert report["training_step"]["tinyflux_ms"]["min"] > 0 and report["adam"]["ratio"]["median"] > 0
    assert "sgemm 2048x2048" in capsys.readouterr().out
    sweep = conv_bench.main(["--sweep", "--rounds", "1", "--steps", "1", "--pause", "0", "--no-torch"])
    assert [(entry["model"], entry["batch"]) for entry in sweep] == [("MNIST", 32), ("MNIST", 128), ("MNIST", 512),
                                                                    ("video", 32), ("video3", 8), ("video3", 32)]


def test_bad_arguments_are_refused_with_what_was_expected(capsys):
    conv_bench, compare = load_benchmark("conv_bench"), load_benchmark("compare_commits")
    with pytest.raises(SystemExit):
        conv_bench.main(["--profile", "--pause", "-1"])
    assert "--pause must be 0 or more seconds, got -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["HEAD", "--rounds", "0"])
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
    if (ROOT / ".git").exists():
        with pytest.raises(SystemExit):
            compare.main(["no-such-commit"])
        assert "'no-such-commit' is not a commit" in capsys.readouterr().err
