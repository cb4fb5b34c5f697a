"""A stand-in for CuPy, for running tinyflux's GPU path on the CPU in the tests.

``FakeCupy`` offers the few CuPy calls that ``CudaOps`` (tinyflux/backends/cuda_ops.py)
and ``tf.capture`` (tinyflux/cuda_graph.py) make, on NumPy arrays: ``RawModule``
runs the kernels compiled for the CPU (tests/cuda_emulation.py), with the grid and
block sizes CudaOps launches them with, and each
``ElementwiseKernel`` runs its own C body, compiled for the CPU there too.
Streams and graphs are played, not run: capture records which kernels were
launched, and CUDA's rules (no synchronize during a capture) are asserted.
With it, ``CudaOps(FakeCupy(...))`` runs whole training steps, eager and
captured, and must agree with the NumPy path.
"""
import contextlib
import ctypes
import types

import numpy as np

from cuda_emulation import c_argument, launch as launch_kernel
from tinyflux.backends import cuda_ops



def poison(dtype):
    """What a new array of this type is filled with: a value no kernel should leave behind (NaN; for integers
    the largest value, which no index or count of these kernels reaches)."""
    return np.nan if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max


class FakeStream:
    """CuPy's Stream, as far as tinyflux.cuda_graph uses it: capture refuses synchronize, as CUDA does."""

    def __init__(self, fake, non_blocking=False, ptr=None):
        self.fake, self.ptr = fake, id(self) if ptr is None else ptr  # its address, as CuPy's .ptr
        self.previous = None

    def __enter__(self):  # as CuPy's: the current stream within the block
        self.previous, self.fake.stream = self.fake.stream, self
        return self

    def __exit__(self, *exc):
        self.fake.stream = self.previous
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


class FakeCublasLibrary:
    """libcublas as tinyflux.backends.cublas_calls calls it through ctypes, on host memory: column-major GEMMs on the
    raw addresses and leading dimensions it is given, as cuBLAS computes them, so that a wrong op, size or leading
    dimension gives a wrong product. During a capture the product only records its launch, and the handle must run
    on the capturing stream with the workspace set after that stream (cuBLAS would allocate otherwise)."""

    def __init__(self, fake):
        self.fake, self.handles = fake, {}

    def cublasCreate_v2(self, handle_pointer):  # noqa: N802 (cuBLAS's names)
        assert not self.fake.capturing, "cublasCreate during capture: it allocates"
        handle = len(self.handles) + 1
        handle_pointer._obj.value = handle
        self.handles[handle] = {"stream": None, "workspace": None}
        return 0

    def cublasSetStream_v2(self, handle, stream):  # noqa: N802
        state = self.handles[handle.value]
        # as cuBLAS: back to its own workspace pool; (c_void_p(0).value is None: the null stream)
        state["stream"], state["workspace"] = stream.value or 0, None
        return 0

    def cublasSetWorkspace_v2(self, handle, pointer, size):  # noqa: N802
        self.handles[handle.value]["workspace"] = (pointer.value, size.value)
        return 0

    def cublasSgemm_v2(self, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # noqa: N802
        return self._gemm(np.float32, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def cublasDgemm_v2(self, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # noqa: N802
        return self._gemm(np.float64, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def _gemm(self, dtype, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        state = self.handles[handle.value]
        self.fake._record("cublas_gemm")
        if self.fake.capturing:
            assert state["stream"] == self.fake.current_stream().ptr, "cuBLAS off the capturing stream"
            assert state["workspace"] is not None, "cuBLAS during capture without its workspace"
            return 0  # recorded, not run
        op_a = column_major(dtype, a.value, *((m, k) if transa == 0 else (k, m)), lda)
        op_b = column_major(dtype, b.value, *((k, n) if transb == 0 else (n, k)), ldb)
        op_a, op_b = (op_a if transa == 0 else op_a.T), (op_b if transb == 0 else op_b.T)
        out = column_major(dtype, c.value, m, n, ldc)
        out[...] = alpha._obj.value * (op_a @ op_b) + (beta._obj.value * out if beta._obj.value else 0)
        return 0


def column_major(dtype, address, rows, cols, ld):
    """The (rows, cols) column-major matrix at a host address, leading dimension ld, as a writable NumPy view."""
    assert ld >= max(1, rows), f"leading dimension {ld} < {rows} rows: cuBLAS refuses it"
    count = (cols - 1) * ld + rows
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    memory = np.ctypeslib.as_array((ctype * count).from_address(address))
    return np.lib.stride_tricks.as_strided(memory, (rows, cols), (memory.itemsize, ld * memory.itemsize))


class FakeCupy:
    ndarray = np.ndarray
    int32, float64 = np.int32, np.float64
    array, asarray, ascontiguousarray = staticmethod(np.array), staticmethod(np.asarray), \
        staticmethod(np.ascontiguousarray)

    def __init__(self, library):
        self.library = library
        self.launches = []
        self.capturing, self.launches_in_capture, self.allocator = False, [], None
        self.cublas_library, self.allocations = FakeCublasLibrary(self), []
        self.default_stream = FakeStream(self, ptr=0)  # CuPy's null stream: address 0
        self.stream = None
        fake = self

        class Cuda:
            Stream = staticmethod(lambda non_blocking=False: FakeStream(fake, non_blocking))
            get_current_stream = staticmethod(lambda: fake.current_stream())
            Device = staticmethod(lambda: types.SimpleNamespace(id=0))

            @staticmethod
            def alloc(size):
                fake.allocations.append(size)
                return types.SimpleNamespace(ptr=4096 * len(fake.allocations), size=size)

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
        # during capture no kernel runs, so arrays stay as made: zeros keep NumPy's later steps free of NaN warnings.
        # Otherwise the memory is poisoned (NaN, or -1 for integers) instead of left as it was: a freed array of the
        # same size often holds the right answer already, and would hide a kernel that skips elements.
        array = np.zeros(shape, dtype) if self.capturing else np.full(shape, poison(dtype), dtype)
        if self.allocator is not None:  # CuPy would take the memory from the allocator in use
            self.allocator(array.nbytes)
        return array

    def empty_like(self, array):
        if self.capturing:
            return self.empty(array.shape, array.dtype)
        made = np.empty_like(array)  # keeps the memory order of array, as CuPy's does
        made[...] = poison(array.dtype)
        return made

    def current_stream(self):
        return self.stream or self.default_stream

    def get_default_memory_pool(self):
        return types.SimpleNamespace(malloc=lambda size: object())

    def _record(self, name):
        self.launches.append(name)
        if self.capturing:
            self.launches_in_capture.append(name)

    def RawModule(self, code, options, name_expressions):  # noqa: N802 (CuPy's name)
        assert code == cuda_ops.source()
        assert len(name_expressions) == 2 * len(cuda_ops.KERNELS) + len(cuda_ops.PLAIN_KERNELS)
        fake = self

        class Module:
            def get_function(self, expression):
                name, ctype = expression.rstrip(">").split("<") if "<" in expression else (expression, "plain")

                def launch(grid, block, args):
                    assert len(grid) == len(block) == 1 and 1 <= grid[0] and 1 <= block[0] <= 1024  # CUDA's limits
                    fake._record(name)
                    if fake.capturing:
                        return  # CUDA records the launch into the graph and runs nothing
                    for array in args:  # only the inputs of im2col, maxpool and the GEMMs may be strided views
                        assert not isinstance(array, np.ndarray) or array.flags.c_contiguous or \
                            name in ("im2col", "maxpool", "gemm")
                    launch_kernel(fake.library, name, int(grid[0]), int(block[0]), *args)
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
                # the C body compiled for the CPU, on contiguous copies broadcast to the output's shape
                ctype = "float" if outs[0].dtype == np.float32 else "double"
                inputs = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, outs[0].dtype), shape))
                          for a in args[:n_in]]
                results = [np.empty(shape, outs[0].dtype) for _ in outs]
                getattr(fake.library, f"{name}_{ctype}")(*[c_argument(a) for a in inputs + results],
                                                         c_argument(int(np.prod(shape))))
                for out, result in zip(outs, results):
                    out[...] = result
            return outs[0] if len(outs) == 1 else outs
        return launch
