"""Shared fixtures: every backend test runs once per available array library.

``xp`` is numpy, cupy where CuPy and a GPU are present, and NumPy's
interface on PyTorch's CPU tensors (``torch:cpu``, TorchNumpy) where PyTorch
is installed; on a machine without one of them its case is skipped with a
reason, never failed.
"""
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyflux import backends
from tinyflux.data import datasets
from tinyflux.data.idx import write_idx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
collect_ignore_glob = ["data/*.py"]  # the scripts that made the fixtures need PyTorch; they are not tests


def have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


NO_TORCH = pytest.mark.skipif(not have_torch(), reason="PyTorch is not installed (pip install 'tinyflux[test]')")
# the devices an example or fit() is run on in the tests: the CPU, and PyTorch's CPU device through TorchArrays
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("torch:cpu", id="torch-cpu", marks=NO_TORCH)]


def _backends():
    params = [pytest.param("numpy", id="numpy")]
    skip = pytest.mark.skipif(not backends.cupy_available(), reason="CuPy or a CUDA GPU is not available")
    params.append(pytest.param("cupy", id="cupy", marks=skip))
    params.append(pytest.param("torch:cpu", id="torch-cpu", marks=NO_TORCH))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    return backends.array_module(request.param)


def to_numpy(array):
    return backends.to_cpu_array(array)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def load_example(name: str):
    """examples/<name>.py as a module, loaded from its file (it is not in an installed package), once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def examples():
    """``examples("mnist_conv")``: an example script as a module."""
    return load_example


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A folder with a 64-image training set and a 32-image test set, their checksums installed as MNIST's.

    The cache ($TINYFLUX_DATA) points into tmp_path too, so nothing is read from or written to the real one.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (64, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 64).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (32, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 32).astype(np.uint8),
    }
    folder = tmp_path / "fake-mnist"
    folder.mkdir()
    sums = {}
    for name, array in arrays.items():
        write_idx(folder / name, array)
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    monkeypatch.setitem(datasets.SHA256, "mnist", sums)
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    return folder


RUN_EXAMPLE = """
import runpy, sys
from tinyflux.data import datasets
datasets.SHA256["mnist"] = {sums!r}  # the fake files' checksums, as the fake_mnist fixture installs them
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture
def example_command(tmp_path):
    """``example_command(*flags)``: the command line that runs examples/mnist_conv.py as a program on a fake
    MNIST of 512 training and 64 test images (epochs of 16 steps at batch 32, long enough to be interrupted
    inside one), for tests that need a real process: signals, MPI ranks. Prefix it with mpiexec for ranks.
    """
    rng = np.random.default_rng(0)
    folder = tmp_path / "bigger-fake-mnist"
    folder.mkdir()
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (512, 28, 28)).astype(np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 512).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (64, 28, 28)).astype(np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 64).astype(np.uint8)}
    sums = {}
    for name, array in arrays.items():
        write_idx(folder / name, array)
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    code = RUN_EXAMPLE.format(sums=sums)

    def command(*flags, python=(sys.executable,)):
        return [*python, "-c", code, str(EXAMPLES / "mnist_conv.py"), "--data-dir", str(folder), *flags]

    return command


@pytest.fixture(scope="session")
def emulated(tmp_path_factory):
    """tinyflux's CUDA kernels compiled for the CPU (tests/cuda_emulation.py), as a ctypes library."""
    from cuda_emulation import compile_for_the_cpu
    library = compile_for_the_cpu(tmp_path_factory.mktemp("kernels"))
    if library is None:
        pytest.skip("no C++ compiler to emulate the kernels with")
    return library


@pytest.fixture
def gpu_path(emulated, monkeypatch):
    """Every op on a NumPy array takes the CUDA-kernel path: CudaOps on FakeCupy, registered ahead of NumPy.

    Returns the FakeCupy, which records the kernels launched; ``gpu_path.ops`` is the CudaOps.
    """
    from fake_cupy import FakeCupy
    from tinyflux.backends import cuda_ops
    fake = FakeCupy(emulated)
    fake.ops = cuda_ops.CudaOps(fake)
    # cuBLAS for captures: the stand-in library, on the host addresses of NumPy arrays
    monkeypatch.setattr(cuda_ops.cublas_calls, "load_library", lambda: fake.cublas_library)
    monkeypatch.setattr(cuda_ops.cublas_calls, "device_pointer", lambda array: array.ctypes.data)
    monkeypatch.setattr(backends, "_registered",
                        [(lambda array: isinstance(array, np.ndarray), lambda array: fake.ops)] + backends._registered)
    return fake


def move_to(xp, obj):
    """``obj`` (a model, a Tensor, an array) moved to the device of the array library ``xp`` (an ``xp`` fixture)."""
    if xp is np:
        return obj
    if xp.__name__ == "cupy":
        import tinyflux as tf
        return tf.gpu(obj)
    import tinyflux as tf
    return tf.to_device(obj, f"torch:{xp.device}")
