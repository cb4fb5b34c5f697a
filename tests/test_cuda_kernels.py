"""The CUDA kernels of tinyflux/cuda.py, checked without a GPU.

The kernel source is compiled twice here:

- with the machine's C++ compiler, behind a few lines that define CUDA's
  ``__global__``, ``blockIdx`` and friends for one thread (block 0 of 1, thread
  0 of 1), so each grid-stride loop visits every element in turn; the results
  must equal the NumPy implementations bit for bit (or to rounding where the
  order of a sum may differ). This checks all the index arithmetic.
- with nvcc for an H100 (sm_90), where nvcc is installed: this checks that it
  is valid CUDA.

Then the Python side of cuda.py runs on a stand-in for CuPy (``FakeCupy``,
below) that launches the emulated kernels: whole training steps through the
kernel path must match the NumPy path. What none of this checks is CuPy
itself on a real GPU (compiling with NVRTC, launching, its element-wise
kernels); the parity tests (tests/test_parity.py) do that where a GPU exists.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import cuda, nn, optim
from tinyflux.functional import convolution

SIGNATURES = {  # kernel: C parameter list, with T for the element type
    "im2col": "const T* x, T* col, const long long* g",
    "col2im": "const T* col, T* gx, const long long* g",
    "maxpool": "const T* x, T* y, int* argmax, const long long* g",
    "maxpool_backward": "const T* gy, const int* argmax, T* gx, const long long* g",
}
EMULATION = """
#include <cmath>
struct EmulatedDim3 { unsigned int x; };
static const EmulatedDim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
#define __global__
#define __device__
"""


def instantiations(extern_c: bool) -> str:
    """Explicit instances of every kernel for float and double (with C names for ctypes when asked)."""
    lines = []
    for name, params in SIGNATURES.items():
        for ctype in ("float", "double"):
            typed = params.replace("T*", f"{ctype}*")
            arguments = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
            if extern_c:
                lines.append(f'extern "C" void {name}_{ctype}({typed}) {{ {name}<{ctype}>({arguments}); }}')
            else:
                lines.append(f"template __global__ void {name}<{ctype}>({typed});")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to emulate the kernels with")
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "kernels.cpp").write_text(EMULATION + cuda.SOURCE + instantiations(extern_c=True))
    subprocess.run([compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


def call(library, name, *arrays):
    ctype = "float" if arrays[0].dtype == np.float32 else "double"
    getattr(library, f"{name}_{ctype}")(*[ctypes.c_void_p(a.ctypes.data) for a in arrays])


def strides(array):
    return [s // array.itemsize for s in array.strides]


def channel_major(x):
    """The same values as x, in the memory order a convolution returns: (C, N, ...) behind an (N, C, ...) view."""
    return np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)


CONVOLUTIONS = [  # (input shape, kernel, stride, pad)
    ((2, 3, 9), (3,), (1,), (1,)),
    ((2, 3, 10), (4,), (3,), (2,)),
    ((2, 1, 28, 28), (3, 3), (1, 1), (1, 1)),
    ((3, 4, 7, 7), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 9, 8), (3, 2), (2, 1), (1, 0)),
    ((1, 2, 6, 10, 9), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((2, 1, 5, 7, 6), (2, 3, 2), (2, 2, 1), (0, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, kernel, stride, pad", CONVOLUTIONS)
def test_im2col_and_col2im_match_numpy(emulated, x_shape, kernel, stride, pad, dtype):
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(x_shape).astype(dtype), channel_major(rng.standard_normal(x_shape).astype(dtype))):
        expected = convolution.im2col(x, kernel, stride, pad)
        col = np.full(expected.shape, np.nan, dtype)
        out = expected.shape[2 + len(kernel):]
        call(emulated, "im2col", x, col, cuda.geometry(x.shape, strides(x), kernel, stride, pad, out))
        np.testing.assert_array_equal(col, expected)

    gcol = rng.standard_normal(expected.shape).astype(dtype)
    expected_gx = convolution.col2im(gcol, x_shape, kernel, stride, pad)  # (N, C, *S) view of (C, N, *S)
    gx = np.full((x_shape[1], x_shape[0], *x_shape[2:]), np.nan, dtype)  # (C, N, *S), as the kernel writes it
    call(emulated, "col2im", gcol, gx, cuda.geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out))
    np.testing.assert_allclose(gx.swapaxes(0, 1), expected_gx, rtol=1e-6 if dtype == np.float32 else 1e-12)


POOLS = [  # (input shape, window, stride)
    ((2, 3, 10), (2,), (2,)),
    ((2, 4, 28, 28), (2, 2), (2, 2)),
    ((2, 3, 7, 7), (2, 2), (2, 2)),  # the floored remainder: the last row and column are in no window
    ((1, 2, 9, 8), (3, 2), (2, 1)),  # overlapping windows
    ((2, 2, 8, 8, 8), (2, 2, 2), (2, 2, 2)),
    ((1, 2, 5, 7, 6), (2, 3, 2), (1, 1, 1)),
]


def pool_with_kernels(library, x, window, stride, gy_values):
    n, c, *sizes = x.shape
    out = tuple((s - k) // st + 1 for s, k, st in zip(sizes, window, stride))
    y = np.full((c, n, *out), np.nan, x.dtype)
    argmax = np.full((c, n, *out), -1, np.int32)
    call(library, "maxpool", x, y, argmax, cuda.geometry(x.shape, strides(x), window, stride, (0,) * len(window), out))
    gy_cn = np.ascontiguousarray(gy_values.swapaxes(0, 1))  # (N, C, *Q) -> (C, N, *Q)
    gx = np.full((c, n, *sizes), np.nan, x.dtype)
    call(library, "maxpool_backward", gy_cn, argmax, gx,
         cuda.geometry(x.shape, [0] * x.ndim, window, stride, (0,) * len(window), out))
    return y.swapaxes(0, 1), gx.swapaxes(0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, window, stride", POOLS)
def test_maxpool_forward_and_backward_match_numpy(emulated, x_shape, window, stride, dtype):
    rng = np.random.default_rng(1)
    x = channel_major(rng.standard_normal(x_shape).astype(dtype))
    tensor = tf.Tensor(x, requires_grad=True)
    y = tf.maxpool(tensor, window, stride)
    gy = rng.standard_normal(y.shape).astype(dtype)
    (y * tf.Tensor(gy)).sum().backward()
    kernel_y, kernel_gx = pool_with_kernels(emulated, x, window, stride, gy)
    np.testing.assert_array_equal(kernel_y, y.data)
    # overlapping windows add their shares in another order than the per-axis NumPy passes: rounding only
    np.testing.assert_allclose(kernel_gx, tensor.grad, rtol=1e-6, atol=1e-6 if dtype == np.float32 else 1e-14)


def test_maxpool_ties_pick_the_first_maximum_in_row_major_order(emulated):
    x = np.zeros((1, 1, 4, 6), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0  # window (0, 0): both offsets 1 (row 0) and 2 (row 1) hold the maximum
    tensor = tf.Tensor(x, requires_grad=True)
    tf.maxpool(tensor, (2, 2)).sum().backward()
    _, kernel_gx = pool_with_kernels(emulated, x, (2, 2), (2, 2), np.ones((1, 1, 2, 3), np.float32))
    np.testing.assert_array_equal(kernel_gx, tensor.grad)
    assert kernel_gx[0, 0, 0, 1] == 1 and kernel_gx[0, 0, 1, 0] == 0


def test_geometry_pads_images_and_sequences_to_three_axes():
    g = dict(zip(cuda.GEOMETRY, cuda.geometry((2, 3, 9), (27, 9, 1), (3,), (2,), (1,), (5,))))
    assert (g["D"], g["H"], g["W"], g["KD"], g["KH"], g["KW"]) == (1, 1, 9, 1, 1, 3)
    assert (g["OD"], g["OH"], g["OW"], g["SW"], g["PW"], g["XN"], g["XW"], g["XD"]) == (1, 1, 5, 2, 1, 27, 1, 0)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_the_source_compiles_as_cuda_for_an_h100(tmp_path):
    (tmp_path / "kernels.cu").write_text(cuda.SOURCE + instantiations(extern_c=False))
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "kernels.cubin"),
                             str(tmp_path / "kernels.cu")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.cubin").stat().st_size > 0


def test_every_kernel_has_a_signature_here():
    assert set(SIGNATURES) == set(cuda.KERNELS)
    for name in cuda.KERNELS:
        assert f"__global__ void {name}(" in cuda.SOURCE


def test_the_kernels_are_never_chosen_for_numpy_arrays(monkeypatch):
    monkeypatch.setenv("TINYFLUX_CUDA_KERNELS", "1")
    assert tf.backend.cuda_kernels(np.zeros(3)) is None
    x = tf.Tensor(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    w = tf.Tensor(np.ones((2, 1, 3, 3), np.float32))
    assert tf.conv(x, w, pad=1).shape == (2, 2, 6, 6)  # the NumPy path, switch or not


# -- the CuPy side of tinyflux/cuda.py, on a stand-in for CuPy ------------------------------
#
# FakeCupy offers the few CuPy calls cuda.py makes, on NumPy arrays: RawModule runs the kernels
# compiled above for the CPU, and each ElementwiseKernel is replaced by the NumPy lines its C
# body spells out. With it, the wrappers in cuda.py and their use in Conv, MaxPool, bias + ReLU
# and Adam run end to end on the CPU, and must agree with the NumPy path.

ELEMENTWISE_IN_NUMPY = {  # name: (inputs, outputs) -> writes the outputs; the C bodies are in cuda.py
    "tinyflux_bias_relu": lambda x, b, y: np.copyto(y, np.maximum(x + b, 0)),
    "tinyflux_relu_backward": lambda gy, y, gx: np.copyto(gx, np.where(y > 0, gy, 0)),
    "tinyflux_adam": lambda g, step, eps, b1, b2, p, m, v: (
        np.copyto(m, m + (1 - b1) * (g - m)), np.copyto(v, v + (1 - b2) * (g * g - v)),
        np.copyto(p, p - step * m / (np.sqrt(v) + eps))),
}


class FakeCupy:
    ndarray = np.ndarray
    int32 = np.int32
    empty, empty_like = staticmethod(np.empty), staticmethod(np.empty_like)
    asarray, ascontiguousarray = staticmethod(np.asarray), staticmethod(np.ascontiguousarray)

    def __init__(self, library):
        self.library = library
        self.launches = []

    def RawModule(self, code, options, name_expressions):  # noqa: N802 (CuPy's name)
        assert code == cuda.SOURCE and len(name_expressions) == 2 * len(cuda.KERNELS)
        fake = self

        class Module:
            def get_function(self, expression):
                name, ctype = expression.rstrip(">").split("<")

                def launch(grid, block, args):
                    assert block == (cuda.THREADS,) and grid[0] >= 1
                    fake.launches.append(name)
                    for array in args:
                        assert array.flags.c_contiguous or name in ("im2col", "maxpool")  # only x is strided
                    getattr(fake.library, f"{name}_{ctype}")(*[ctypes.c_void_p(a.ctypes.data) for a in args])
                return launch
        return Module()

    def ElementwiseKernel(self, inputs, outputs, body, name):  # noqa: N802
        n_in, fake = len(inputs.split(",")), self

        def launch(*args):
            fake.launches.append(name)
            shape = np.broadcast_shapes(*[np.shape(a) for a in args])
            outs = list(args[n_in:])
            assert all(o.shape == shape for o in outs), "outputs must have the broadcast shape"
            ELEMENTWISE_IN_NUMPY[name](*args)
            return outs[0] if len(outs) == 1 else outs
        return launch


@pytest.fixture
def gpu_path(emulated, monkeypatch):
    """Every op takes its tinyflux.cuda branch, on NumPy arrays, with FakeCupy in CuPy's place."""
    fake = FakeCupy(emulated)
    monkeypatch.setattr(tf.backend, "array_module", lambda name: fake if name == "cupy" else np)
    monkeypatch.setattr(tf.backend, "cuda_kernels", lambda array: cuda)
    monkeypatch.setattr(cuda, "_module", None)
    monkeypatch.setattr(cuda, "_geometry_cache", {})
    monkeypatch.setattr(cuda, "_elementwise", {})
    return fake


def mnist_like_model(video=False):
    if video:
        return nn.Chain(nn.Conv((3, 3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2, 2)),
                        nn.Conv((3, 3, 3), 4, 4, tf.relu, stride=2), nn.flatten, nn.Dense(4 * 1 * 1 * 1, 5))
    return nn.Chain(nn.Conv((3, 3), 1, 8, tf.relu, pad=1), nn.MaxPool((2, 2)),
                    nn.Conv((3, 3), 8, 8, tf.relu, pad=1), nn.MaxPool((2, 2)),
                    nn.Conv((3, 3), 8, 6, stride=2, pad=1), tf.relu, nn.flatten, nn.Dense(6 * 2 * 2, 10))


def train_three_steps(video=False):
    tf.seed(0)
    model = mnist_like_model(video)
    shape = (4, 1, 8, 8, 8) if video else (4, 1, 12, 12)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        tf.logit_cross_entropy(model(tf.Tensor(x)), np.arange(4)).backward()
        opt.step()
        opt.zero_grad()
    return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_training_steps_through_the_kernel_path_match_numpy(video, request):
    expected = train_three_steps(video)
    fake = request.getfixturevalue("gpu_path")
    got = train_three_steps(video)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for name in ("im2col", "col2im", "maxpool", "maxpool_backward", "tinyflux_bias_relu",
                 "tinyflux_relu_backward", "tinyflux_adam"):
        assert name in fake.launches, f"{name} never ran"
    assert fake.launches.count("tinyflux_adam") == 3  # one launch per step updates every parameter
