"""The CUDA kernels of tinyflux/cuda.py, checked without a GPU.

The kernel source is compiled twice here:

- with the machine's C++ compiler, behind a few lines that define CUDA's
  ``__global__``, ``threadIdx``, ``__syncthreads`` and friends for one block of
  four CPU threads running at once (``EMULATION``), so each grid-stride loop
  splits its elements four ways and ``gemm`` fills its 2 x 2 tiles of
  shared memory from all four; the results must equal the NumPy implementations bit for bit (or
  to rounding where the order of a sum may differ). This checks all the index
  arithmetic.
- with nvcc for an H100 (sm_90), where nvcc is installed: this checks that it
  is valid CUDA.

Then the Python side of cuda.py runs on a stand-in for CuPy (``FakeCupy``,
below) that launches the emulated kernels: whole training steps through the
kernel path must match the NumPy path. What none of this checks is CuPy
itself on a real GPU (compiling with NVRTC, launching, its element-wise
kernels); the parity tests (tests/test_parity.py) do that where a GPU exists.
"""
import contextlib
import ctypes
import shutil
import subprocess
import types

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
    "gemm": "const T* a, const T* b, T* out, const long long* s",
    "sum_splits": "const T* partial, T* c, long long splits, long long n",
    "adam": "T* p, const T* g, T* m, T* v, const double* hyper, long long n",
}
EMULATION = """
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>
// One block of BLOCK_THREADS CPU threads, each with its own threadIdx; __syncthreads() is a barrier.
struct EmulatedDim3 { unsigned int x; };
static thread_local EmulatedDim3 threadIdx = {0};
static const EmulatedDim3 blockIdx = {0}, blockDim = {BLOCK_THREADS}, gridDim = {1};
static std::barrier<>* block_barrier = nullptr;
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() block_barrier->arrive_and_wait()

template <typename Body>
void run_block(Body body) {  // body() in every thread of the block at once, as a launch would
    std::barrier<> barrier(BLOCK_THREADS);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (unsigned int t = 0; t < BLOCK_THREADS; ++t) threads.emplace_back([&body, t] { threadIdx.x = t; body(); });
    for (auto& thread : threads) thread.join();
}
"""
BLOCK_THREADS = 4  # enough to exercise the grid-stride loops and gemm's shared tiles
GEMM_TILE = 2  # the emulated gemm's tiles are 2 x 2 outputs: BLOCK_THREADS threads


def instantiations(extern_c: bool) -> str:
    """Explicit instances of every kernel for float and double (with C names for ctypes when asked)."""
    lines = []
    for name, params in SIGNATURES.items():
        for ctype in ("float", "double"):
            typed = params.replace("T*", f"{ctype}*")
            arguments = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
            if extern_c:
                lines.append(f'extern "C" void {name}_{ctype}({typed}) '
                             f'{{ run_block([&] {{ {name}<{ctype}>({arguments}); }}); }}')
            else:
                lines.append(f"template __global__ void {name}<{ctype}>({typed});")
    if extern_c:
        lines.append('extern "C" void count_step_plain(double* hyper) { run_block([&] { count_step(hyper); }); }')
    return "\n".join(lines)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to emulate the kernels with")
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "kernels.cpp").write_text(EMULATION + cuda.SOURCE + instantiations(extern_c=True))
    subprocess.run([compiler, "-std=c++20", "-O1", "-pthread", f"-DBLOCK_THREADS={BLOCK_THREADS}",
                    f"-DGEMM_TILE={GEMM_TILE}", "-shared",
                    "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


def c_argument(value):
    """An array as a pointer to its first element; an integer as a long long."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    return ctypes.c_longlong(int(value))


def call(library, name, *arrays):
    ctype = "plain" if name in cuda.PLAIN_KERNELS else "float" if arrays[0].dtype == np.float32 else "double"
    getattr(library, f"{name}_{ctype}")(*[c_argument(a) for a in arrays])


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


def geometry(*args, index_bits=32):
    """cuda.geometry, with the kernels told to compute in 64-bit integers when index_bits is 64.

    Every test shape fits in 32 bits, so only this way do the 64-bit bodies of the kernels run here."""
    g = cuda.geometry(*args)
    assert g[cuda.GEOMETRY.index("NARROW")] == 1
    g[cuda.GEOMETRY.index("NARROW")] = int(index_bits == 32)
    return g


INDEX_BITS = [pytest.param(32, id="int32"), pytest.param(64, id="int64")]


@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, kernel, stride, pad", CONVOLUTIONS)
def test_im2col_and_col2im_match_numpy(emulated, x_shape, kernel, stride, pad, dtype, index_bits):
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(x_shape).astype(dtype), channel_major(rng.standard_normal(x_shape).astype(dtype))):
        expected = convolution.im2col(x, kernel, stride, pad)
        col = np.full(expected.shape, np.nan, dtype)
        out = expected.shape[2 + len(kernel):]
        call(emulated, "im2col", x, col, geometry(x.shape, strides(x), kernel, stride, pad, out, index_bits=index_bits))
        np.testing.assert_array_equal(col, expected)

    gcol = rng.standard_normal(expected.shape).astype(dtype)
    expected_gx = convolution.col2im(gcol, x_shape, kernel, stride, pad)  # (N, C, *S) view of (C, N, *S)
    gx = np.full((x_shape[1], x_shape[0], *x_shape[2:]), np.nan, dtype)  # (C, N, *S), as the kernel writes it
    call(emulated, "col2im", gcol, gx,
         geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out, index_bits=index_bits))
    np.testing.assert_allclose(gx.swapaxes(0, 1), expected_gx, rtol=1e-6 if dtype == np.float32 else 1e-12)


POOLS = [  # (input shape, window, stride)
    ((2, 3, 10), (2,), (2,)),
    ((2, 4, 28, 28), (2, 2), (2, 2)),
    ((2, 3, 7, 7), (2, 2), (2, 2)),  # the floored remainder: the last row and column are in no window
    ((1, 2, 9, 8), (3, 2), (2, 1)),  # overlapping windows
    ((2, 2, 8, 8, 8), (2, 2, 2), (2, 2, 2)),
    ((1, 2, 5, 7, 6), (2, 3, 2), (1, 1, 1)),
]


def pool_with_kernels(library, x, window, stride, gy_values, index_bits=32):
    n, c, *sizes = x.shape
    out = tuple((s - k) // st + 1 for s, k, st in zip(sizes, window, stride))
    y = np.full((c, n, *out), np.nan, x.dtype)
    argmax = np.full((c, n, *out), -1, np.int32)
    no_pad = (0,) * len(window)
    call(library, "maxpool", x, y, argmax,
         geometry(x.shape, strides(x), window, stride, no_pad, out, index_bits=index_bits))
    gy_cn = np.ascontiguousarray(gy_values.swapaxes(0, 1))  # (N, C, *Q) -> (C, N, *Q)
    gx = np.full((c, n, *sizes), np.nan, x.dtype)
    call(library, "maxpool_backward", gy_cn, argmax, gx,
         geometry(x.shape, [0] * x.ndim, window, stride, no_pad, out, index_bits=index_bits))
    return y.swapaxes(0, 1), gx.swapaxes(0, 1)


@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, window, stride", POOLS)
def test_maxpool_forward_and_backward_match_numpy(emulated, x_shape, window, stride, dtype, index_bits):
    rng = np.random.default_rng(1)
    x = channel_major(rng.standard_normal(x_shape).astype(dtype))
    tensor = tf.Tensor(x, requires_grad=True)
    y = tf.maxpool(tensor, window, stride)
    gy = rng.standard_normal(y.shape).astype(dtype)
    (y * tf.Tensor(gy)).sum().backward()
    kernel_y, kernel_gx = pool_with_kernels(emulated, x, window, stride, gy, index_bits)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_matches_numpy_on_plain_and_transposed_views_whole_or_split(emulated, dtype):
    rng = np.random.default_rng(2)
    a_plain, b_plain = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
    a_transposed = rng.standard_normal((7, 5)).astype(dtype).T  # (5, 7) view of (7, 5) memory
    b_transposed = rng.standard_normal((3, 7)).astype(dtype).T
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for a in (a_plain, a_transposed):
        for b in (b_plain, b_transposed):
            # 5 x 3 outputs in 2 x 2 tiles: the last row and column of tiles stick out of the matrix
            for splits, chunk in ((1, 7), (2, 4), (4, 2)):  # k = 7 whole, or cut into ranges
                out = np.full((splits, 5, 3), np.nan, dtype)
                sizes = np.array([5, 3, 7, *strides(a), *strides(b), splits, chunk], dtype=np.int64)
                call(emulated, "gemm", a, b, out, sizes)
                ranges = [slice(i * chunk, (i + 1) * chunk) for i in range(splits)]
                for part, k in zip(out, ranges):
                    np.testing.assert_allclose(part, a[:, k] @ b[k], rtol=tolerance, atol=tolerance)
                c = np.full((5, 3), np.nan, dtype)
                call(emulated, "sum_splits", out, c, splits, c.size)
                np.testing.assert_allclose(c, a @ b, rtol=tolerance)


def test_gemm_cuts_long_sums_into_whole_tiles():
    for m, n, k in ((16, 9, 100352), (32, 144, 25088), (32, 25088, 144), (10, 288, 128), (5, 3, 0)):
        splits, chunk = cuda.gemm_splits(m, n, k)
        assert 1 <= splits <= cuda.GEMM_MAX_SPLITS and chunk % cuda.GEMM_TILE == 0
        assert (splits - 1) * chunk < max(k, 1) <= splits * chunk  # every k in exactly one range
    assert cuda.gemm_splits(16, 9, 100352)[0] == cuda.GEMM_MAX_SPLITS  # one tile of outputs: split all the way
    assert cuda.gemm_splits(32, 25088, 144)[0] == 1  # 3136 tiles: plenty of blocks already


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_reads_its_hyperparameters_from_memory(emulated, dtype):
    rng = np.random.default_rng(3)
    p0, g = rng.standard_normal(11).astype(dtype), rng.standard_normal(11).astype(dtype)
    expected = tf.Tensor(p0.copy())
    opt = optim.Adam([expected], lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    p, m, v = p0.copy(), np.zeros(11, dtype), np.zeros(11, dtype)
    for t in (1, 2, 3):
        expected.grad = g
        opt.step()
        if t == 2:
            opt.lr = 0.001  # a new learning rate reaches the kernel through memory
        hyper = np.array([0.01 if t < 3 else 0.001, 0.8, 0.95, 1e-6, t], dtype=np.float64)
        call(emulated, "adam", p, g, m, v, hyper, p.size)
        np.testing.assert_allclose(p, expected.data, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(m, opt.m[0], rtol=1e-6)


def test_elementwise_adam_rounds_its_rates_as_numpy_does(gpu_path):
    """cuda.adam_update (the eager GPU update) gives NumPy's m and v to float32 rounding.

    1 - beta2 must be computed in double and then rounded, as NumPy does: 1.0f - 0.999f is 1.3e-5
    off, and on an H100 that moved some MNIST weights by 9e-3 within 5 steps."""
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    expected = [a.copy() for a in (p, m, v)]
    for _ in range(3):
        cuda.adam_update(p, g, m, v, 0.01, 1e-8, 0.9, 0.999)
        expected[1] += (1 - 0.9) * (g - expected[1])  # NumPy's path in optim.adam_update
        expected[2] += (1 - 0.999) * (g * g - expected[2])
    np.testing.assert_allclose(m, expected[1], rtol=1e-6)
    np.testing.assert_allclose(v, expected[2], rtol=1e-6)


def test_geometry_says_when_32_bit_indices_are_enough():
    def narrow(x_shape, kernel, x_strides=None):
        n, c, *sizes = x_shape
        x_strides = x_strides or list(np.cumprod((1,) + tuple(x_shape[::-1]))[-2::-1])  # contiguous
        out = tuple(s - k + 1 for s, k in zip(sizes, kernel))
        return dict(zip(cuda.GEOMETRY, cuda.geometry(x_shape, x_strides, kernel, (1,) * len(kernel),
                                                     (0,) * len(kernel), out)))["NARROW"]

    assert narrow((128, 16, 14, 14), (3, 3)) == 1  # MNIST: columns of 144 x 18,432 numbers
    assert narrow((64, 64, 16, 112, 112), (3, 3, 3)) == 0  # a video batch: columns of 2.3e10 numbers
    assert narrow((1, 1, 5), (2,), x_strides=[1, 1, 2**31]) == 0  # a view whose elements lie far apart


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
    for name in cuda.KERNELS + cuda.PLAIN_KERNELS:
        assert f"__global__ void {name}(" in cuda.SOURCE


def test_count_step_advances_t_only(emulated):
    hyper = np.array([1e-3, 0.9, 0.999, 1e-8, 41.0])
    call(emulated, "count_step", hyper)
    np.testing.assert_array_equal(hyper, [1e-3, 0.9, 0.999, 1e-8, 42.0])


def test_the_kernels_are_never_chosen_for_numpy_arrays(monkeypatch):
    monkeypatch.delenv("TINYFLUX_CUDA_KERNELS", raising=False)  # the default: on for GPU arrays
    assert tf.backend.cuda_kernels(np.zeros(3)) is None
    x = tf.Tensor(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    w = tf.Tensor(np.ones((2, 1, 3, 3), np.float32))
    assert tf.conv(x, w, pad=1).shape == (2, 2, 6, 6)  # the NumPy path, switch or not


def test_the_kernels_are_on_for_gpu_arrays_unless_switched_off(monkeypatch):
    monkeypatch.setattr(tf.backend, "is_gpu_array", lambda array: True)  # pretend: a CuPy array
    monkeypatch.delenv("TINYFLUX_CUDA_KERNELS", raising=False)
    assert tf.backend.cuda_kernels(np.zeros(3)) is cuda
    monkeypatch.setenv("TINYFLUX_CUDA_KERNELS", "0")
    assert tf.backend.cuda_kernels(np.zeros(3)) is None
    with tf.backend.capture_safe():  # a graph capture needs them, switch or not
        assert tf.backend.cuda_kernels(np.zeros(3)) is cuda


# -- the CuPy side of tinyflux/cuda.py, on a stand-in for CuPy ------------------------------
#
# FakeCupy offers the few CuPy calls cuda.py makes, on NumPy arrays: RawModule runs the kernels
# compiled above for the CPU, and each ElementwiseKernel is replaced by the NumPy lines its C
# body spells out. With it, the wrappers in cuda.py and their use in Conv, MaxPool, bias + ReLU
# and Adam run end to end on the CPU, and must agree with the NumPy path.

ELEMENTWISE_IN_NUMPY = {  # name: (inputs, outputs) -> writes the outputs; the C bodies are in cuda.py
    "tinyflux_bias_relu": lambda x, b, y: np.copyto(y, np.maximum(x + b, 0)),
    "tinyflux_relu_backward": lambda gy, y, gx: np.copyto(gx, np.where(y > 0, gy, 0)),
    "tinyflux_adam": lambda g, step, eps, rate1, rate2, p, m, v: (
        np.copyto(m, m + rate1 * (g - m)), np.copyto(v, v + rate2 * (g * g - v)),
        np.copyto(p, p - step * m / (np.sqrt(v) + eps))),
}


class FakeStream:
    """CuPy's Stream, as far as tinyflux.graph uses it: capture refuses synchronize, as CUDA does."""

    def __init__(self, fake, non_blocking=False):
        self.fake = fake

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        assert not self.fake.capturing, "synchronize() during capture: CUDA refuses it"

    def begin_capture(self):
        assert not self.fake.capturing
        self.fake.capturing = True
        self.fake.launches_in_capture = []

    def end_capture(self):
        self.fake.capturing = False
        return FakeGraph(self.fake)


class FakeGraph:
    """Replays by running the captured Python again (set ``fake.replay``): checks tinyflux's side only."""

    def __init__(self, fake):
        self.fake = fake

    def launch(self, stream):
        self.fake.replay()


class FakeCupy:
    ndarray = np.ndarray
    int32, float64 = np.int32, np.float64
    empty_like = staticmethod(np.empty_like)
    array, asarray, ascontiguousarray = staticmethod(np.array), staticmethod(np.asarray), \
        staticmethod(np.ascontiguousarray)

    def __init__(self, library):
        self.library = library
        self.launches = []
        self.capturing, self.launches_in_capture, self.allocator = False, [], None
        fake = self

        class Cuda:
            Stream = staticmethod(lambda non_blocking=False: FakeStream(fake, non_blocking))
            get_current_stream = staticmethod(lambda: FakeStream(fake))

            @staticmethod
            @contextlib.contextmanager
            def using_allocator(allocator):
                fake.allocator = allocator
                try:
                    yield
                finally:
                    fake.allocator = None
        self.cuda = Cuda

    def empty(self, shape, dtype=float):
        # during capture no kernel runs, so arrays stay as made: zeros keep NumPy's later steps free of NaN warnings
        array = np.zeros(shape, dtype) if self.capturing else np.empty(shape, dtype)
        if self.allocator is not None:  # CuPy would take the memory from the allocator in use
            self.allocator(array.nbytes)
        return array

    def get_default_memory_pool(self):
        return types.SimpleNamespace(malloc=lambda size: object())

    def _record(self, name):
        self.launches.append(name)
        if self.capturing:
            self.launches_in_capture.append(name)

    def RawModule(self, code, options, name_expressions):  # noqa: N802 (CuPy's name)
        assert code == cuda.SOURCE and len(name_expressions) == 2 * len(cuda.KERNELS) + len(cuda.PLAIN_KERNELS)
        fake = self

        class Module:
            def get_function(self, expression):
                name, ctype = expression.rstrip(">").split("<") if "<" in expression else (expression, "plain")

                def launch(grid, block, args):
                    threads = 1 if ctype == "plain" else cuda.GEMM_TILE ** 2 if name == "gemm" else cuda.THREADS
                    assert block == (threads,) and grid[0] >= 1
                    fake._record(name)
                    if fake.capturing:
                        return  # CUDA records the launch into the graph and runs nothing
                    for array in args:  # only the inputs of im2col, maxpool and the GEMMs may be strided views
                        assert not isinstance(array, np.ndarray) or array.flags.c_contiguous or \
                            name in ("im2col", "maxpool", "gemm")
                    getattr(fake.library, f"{name}_{ctype}")(*[c_argument(a) for a in args])
                return launch
        return Module()

    def ElementwiseKernel(self, inputs, outputs, body, name):  # noqa: N802
        n_in, fake = len(inputs.split(",")), self

        def launch(*args):
            fake._record(name)
            shape = np.broadcast_shapes(*[np.shape(a) for a in args])
            outs = list(args[n_in:])
            assert all(o.shape == shape for o in outs), "outputs must have the broadcast shape"
            if not fake.capturing:  # during capture CUDA records the launch and runs nothing
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


# -- tf.capture on the stand-in ---------------------------------------------------------------

def mnist_like_batches(count, video=False):
    rng = np.random.default_rng(4)
    shape, classes = ((4, 1, 8, 8, 8), 5) if video else ((4, 1, 12, 12), 10)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, classes, 4)) for _ in range(count)]


def replay_by_rerunning(fake, step):
    """Make the stand-in's graph replay ``step`` by running its recorded work again, into the same loss array."""
    def replay():
        with tf.backend.capture_safe():
            step.loss[...] = step._record()
    fake.replay = replay


@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_a_captured_step_replays_like_eager_steps(request, monkeypatch, video):
    """tf.capture through FakeCupy, whose "graph" replays by running the recorded Python again.

    What this checks: inside the capture every matrix product goes to the own
    GEMM kernel and the step still computes what the eager NumPy step does; t
    and a learning-rate drop reach the Adam kernel through device memory; each
    batch is copied into the static inputs; the rehearsal before capture
    leaves parameters and t as they were; nothing synchronizes during capture,
    and its allocations are kept. What it cannot check: that CUDA records and
    replays these launches; tests/test_parity.py does that on a GPU.
    """
    batches = mnist_like_batches(6, video)
    tf.seed(0)
    model = mnist_like_model(video)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    expected_losses = []
    for i, (x, y) in enumerate(batches):
        opt.lr = 1e-3 if i >= 3 else 1e-2
        loss = tf.logit_cross_entropy(model(tf.Tensor(x)), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        expected_losses.append(loss.item())
    expected = [p.data.copy() for p in model.parameters()]

    fake = request.getfixturevalue("gpu_path")
    monkeypatch.setattr(tf.backend, "is_gpu_array", lambda array: isinstance(array, np.ndarray))
    tf.seed(0)
    model = mnist_like_model(video)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    before = [p.data.copy() for p in model.parameters()]
    step = tf.capture(model, tf.logit_cross_entropy, opt, *batches[0])
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    assert opt.t == 0 and step.kept
    assert {"gemm", "adam", "im2col", "col2im", "maxpool", "maxpool_backward", "tinyflux_bias_relu",
            "tinyflux_relu_backward"} <= set(fake.launches_in_capture)

    replay_by_rerunning(fake, step)
    losses = []
    for i, (x, y) in enumerate(batches):
        opt.lr = 1e-3 if i >= 3 else 1e-2
        losses.append(float(step(x, y)))
    assert opt.t == 6
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for e, p in zip(expected, model.parameters()):
        np.testing.assert_allclose(p.data, e, rtol=1e-5, atol=1e-6)


def test_capture_refuses_what_it_cannot_record(request, monkeypatch):
    tf.seed(0)
    model = mnist_like_model()
    x, y = mnist_like_batches(1)[0]
    with pytest.raises(tf.CaptureError, match="needs the model on a GPU .* its parameters are numpy arrays"):
        tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    with pytest.raises(tf.CaptureError, match="optim.Adam expected, got SGD"):
        tf.capture(model, tf.logit_cross_entropy, optim.SGD(model.parameters()), x, y)
    with pytest.raises(tf.CaptureError, match="must hold exactly model.parameters()"):
        tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()[:2]), x, y)

    fake = request.getfixturevalue("gpu_path")
    monkeypatch.setattr(tf.backend, "is_gpu_array", lambda array: isinstance(array, np.ndarray))

    def loss_that_reads_the_gpu(scores, labels):  # as float(loss) would inside a real capture
        if fake.capturing:
            raise RuntimeError("operation not permitted when stream is capturing")
        return tf.logit_cross_entropy(scores, labels)
    with pytest.raises(tf.CaptureError, match=r"CUDA could not record the step \(RuntimeError: operation not "
                                              r"permitted when stream is capturing\)\. During a capture only"):
        tf.capture(model, loss_that_reads_the_gpu, optim.Adam(model.parameters()), x, y)
    assert not fake.capturing  # the capture was ended

    step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    with pytest.raises(ValueError, match=r"x must be float32\(4, 1, 12, 12\) as at capture, "
                                         r"got float32\(3, 1, 12, 12\)"):
        step(x[:3], y)
    with pytest.raises(ValueError, match="labels must lie in 0..9, got values from 0 to 10"):
        step(x, np.array([0, 1, 2, 10]))


def test_gemm_splits_long_sums_and_adds_the_parts(gpu_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4096)).astype(np.float32)  # (M, K): a weight gradient's shape, 6 long sums
    b = rng.standard_normal((2, 4096)).astype(np.float32).T  # (K, N) as a transposed view
    np.testing.assert_allclose(cuda.gemm(a, b), a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cuda.gemm(a[:, :9], b[:9]), a[:, :9] @ b[:9], rtol=1e-5)  # short sums: whole
    assert gpu_path.launches == ["gemm", "sum_splits", "gemm"]


def test_a_captured_step_resumes_from_a_checkpoint(request, monkeypatch, tmp_path):
    """tf.load between replays writes into the buffers the graph reads, and its t reaches the Adam kernel."""
    fake = request.getfixturevalue("gpu_path")
    monkeypatch.setattr(tf.backend, "is_gpu_array", lambda array: isinstance(array, np.ndarray))
    monkeypatch.setattr(tf.backend, "to_cpu_array", np.asarray)  # the stand-in's "GPU" arrays are NumPy's
    batches = mnist_like_batches(6)
    tf.seed(0)
    model = mnist_like_model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = tf.capture(model, tf.logit_cross_entropy, opt, *batches[0])

    replay_by_rerunning(fake, step)

    for x, y in batches[:3]:
        step(x, y)
    tf.save(tmp_path / "halfway.h5", model, opt)
    first = [float(step(x, y)) for x, y in batches[3:]]
    after_first = [p.data.copy() for p in model.parameters()]
    tf.load(tmp_path / "halfway.h5", model, opt)
    assert opt.t == 3
    second = [float(step(x, y)) for x, y in batches[3:]]
    assert second == first and opt.t == 6
    for p, expected in zip(model.parameters(), after_first):
        np.testing.assert_array_equal(p.data, expected)
