"""tinyflux's CUDA kernels (tinyflux/backends/kernels.cu) compiled and run on the CPU, for the tests.

The source is compiled with the machine's C++ compiler behind a few lines
(``EMULATION``) that define CUDA's ``__global__``, ``threadIdx``,
``blockIdx``, ``blockDim``, ``gridDim`` and ``__syncthreads`` for the CPU. A
launch runs the grid and block sizes it is given, the ones ``CudaOps``
computes (256-thread blocks, 16 x 16 GEMM tiles, at most 65,535 blocks with
the grid-stride loops covering the rest), so a kernel that forgets
``blockIdx`` or a barrier computes wrong numbers here as it would on a GPU.

How a block of threads runs on one CPU thread:

- A kernel with no barrier may run its threads in any order on a GPU and
  must give the same result; here they run one after the other, block by
  block, each to its end (``cooperative = 0``). If such a launch meets a
  ``__syncthreads()`` after all, it fails with an error instead of computing
  something wrong.
- A kernel with barriers (``COOPERATIVE_KERNELS``: the GEMM, which shares
  tiles through shared memory) runs each thread of the block as a *fiber*, a
  function with its own stack (POSIX ``makecontext``/``swapcontext``). The
  block's scheduler resumes thread 0, 1, 2, ... in turn; each runs until it
  reaches ``__syncthreads()``, which switches back to the scheduler. Only
  when every thread waits at the barrier does the next round start. So no
  thread reads a shared tile before all have written it, and one that would
  (a missing barrier) reads stale numbers, deterministically. If some threads
  finish while others wait at a barrier, a GPU would hang: the launch fails.

``call`` launches one kernel on NumPy arrays with CudaOps's launch sizes; the
tests compare the results with the NumPy implementations
(tests/test_cuda_kernels.py), and ``FakeCupy`` (tests/fake_cupy.py) launches
the kernels in CuPy's place with whatever grid and block CudaOps passes.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tinyflux.backends import cuda_ops

SIGNATURES = {  # kernel: C parameter list, with T for the element type
    "im2col": "const T* x, T* col, const long long* g",
    "col2im": "const T* col, T* gx, const long long* g",
    "maxpool": "const T* x, T* y, int* argmax, const long long* g",
    "maxpool_backward": "const T* gy, const int* argmax, T* gx, const long long* g",
    "gemm": "const T* a, const T* b, T* out, const long long* s",
    "sum_splits": "const T* partial, T* c, long long splits, long long n",
    "adam": "T* p, const T* g, T* m, T* v, const double* hyper, long long n",
}
COOPERATIVE_KERNELS = ("gemm",)  # the kernels that call __syncthreads(): their threads run as fibers
# for the grid-stride kernels, which argument's size is the launch's total (CudaOps launches one thread per element)
OUTPUT_ARGUMENT = {"im2col": 1, "col2im": 1, "maxpool": 1, "maxpool_backward": 2, "sum_splits": 1, "adam": 0}
LAUNCH_ERRORS = {1: "reached __syncthreads() in a launch run thread after thread: add the kernel to "
                    "COOPERATIVE_KERNELS in tests/cuda_emulation.py",
                 2: "some threads of a block finished while others waited at __syncthreads(): a GPU would hang"}

EMULATION = r"""
#include <cmath>
#include <functional>
#include <vector>
#include <ucontext.h>

struct EmulatedDim3 { unsigned int x, y, z; };
static EmulatedDim3 threadIdx, blockIdx, blockDim, gridDim;  // set by the launch before each thread (re)starts
#define __global__
#define __device__
#define __shared__ static  // one copy, shared by the threads of the block being run

enum { RUNNING, AT_BARRIER, FINISHED };
static bool cooperative;  // this launch runs its threads as fibers
static int launch_error;  // 0, or a key of LAUNCH_ERRORS
static std::function<void()> kernel_body;  // the kernel call with its arguments, the same for every thread
static ucontext_t scheduler;  // where a fiber returns to at a barrier or at its end
static std::vector<ucontext_t> fibers;
static std::vector<std::vector<char>> stacks;
static std::vector<int> state;
static unsigned int current;  // the thread (fiber) running now

static void __syncthreads() {
    if (!cooperative) { launch_error = 1; return; }
    state[current] = AT_BARRIER;
    swapcontext(&fibers[current], &scheduler);  // back to the scheduler; resumed in the next round
}

static void fiber_start() {
    kernel_body();
    state[current] = FINISHED;  // returning resumes uc_link, the scheduler
}

static void run_block_as_fibers(unsigned int threads) {
    if (fibers.size() < threads) { fibers.resize(threads); stacks.resize(threads); state.resize(threads); }
    for (unsigned int t = 0; t < threads; ++t) {
        stacks[t].resize(1 << 16);
        getcontext(&fibers[t]);
        fibers[t].uc_stack.ss_sp = stacks[t].data();
        fibers[t].uc_stack.ss_size = stacks[t].size();
        fibers[t].uc_link = &scheduler;
        makecontext(&fibers[t], fiber_start, 0);
        state[t] = RUNNING;
    }
    for (;;) {  // one round: every thread that has not finished runs up to its next barrier or its end
        unsigned int waiting = 0, finished = 0;
        for (unsigned int t = 0; t < threads; ++t) {
            if (state[t] == FINISHED) { ++finished; continue; }
            current = t;
            threadIdx.x = t;
            state[t] = RUNNING;
            swapcontext(&scheduler, &fibers[t]);
            if (state[t] == AT_BARRIER) ++waiting; else ++finished;
        }
        if (finished == threads) return;
        if (waiting != threads) { launch_error = 2; return; }
    }
}

static int launch(long long grid, long long block, const std::function<void()>& body) {
    gridDim = {(unsigned int)grid, 1, 1};
    blockDim = {(unsigned int)block, 1, 1};
    threadIdx = blockIdx = {0, 0, 0};
    kernel_body = body;
    launch_error = 0;
    for (unsigned int b = 0; b < gridDim.x && launch_error == 0; ++b) {
        blockIdx.x = b;
        if (cooperative) { run_block_as_fibers(blockDim.x); continue; }
        for (unsigned int t = 0; t < blockDim.x && launch_error == 0; ++t) { threadIdx.x = t; body(); }
    }
    return launch_error;
}
"""


def instantiations(extern_c: bool) -> str:
    """Explicit instances of every kernel for float and double (with C launchers for ctypes when asked).

    A launcher takes the grid and block sizes, then the kernel's own arguments, and returns 0 or an error."""
    lines = []
    for name, params in SIGNATURES.items():
        for ctype in ("float", "double"):
            typed = params.replace("T*", f"{ctype}*")
            arguments = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
            if extern_c:
                lines.append(f'extern "C" int {name}_{ctype}(long long grid, long long block, {typed}) {{ '
                             f'cooperative = {int(name in COOPERATIVE_KERNELS)}; '
                             f'return launch(grid, block, [&] {{ {name}<{ctype}>({arguments}); }}); }}')
            else:
                lines.append(f"template __global__ void {name}<{ctype}>({typed});")
    if extern_c:
        lines.append('extern "C" int count_step_plain(long long grid, long long block, double* hyper) '
                     '{ cooperative = 0; return launch(grid, block, [&] { count_step(hyper); }); }')
        lines += elementwise_functions()
    return "\n".join(lines)


def elementwise_functions() -> list[str]:
    """Each ElementwiseKernel body of CudaOps inside the loop CuPy would write, for float and double, over
    contiguous arrays of one shape (the caller broadcasts the inputs first)."""
    lines = []
    for name, body in cuda_ops.ELEMENTWISE_BODIES.items():
        inputs, outputs = cuda_ops.ELEMENTWISE_PARAMETERS[name]
        for ctype in ("float", "double"):
            params = [f"const T* {n}_in" for n in inputs] + [f"T* {n}_out" for n in outputs]
            loads = " ".join(f"const T {n} = {n}_in[i];" for n in inputs)
            declares = " ".join(f"T {n};" for n in outputs)
            stores = " ".join(f"{n}_out[i] = {n};" for n in outputs)
            lines.append(f'extern "C" void {name}_{ctype}({", ".join(params).replace("T*", ctype + "*")}, '
                         f"long long n) {{ typedef {ctype} T; for (long long i = 0; i < n; ++i) "
                         f"{{ {loads} {declares} {{ {body}; }} {stores} }} }}")
    return lines


def compile_for_the_cpu(folder: Path, kernel_source: str | None = None):
    """kernels.cu (or ``kernel_source``: the tests compile broken copies) behind EMULATION, compiled with the
    C++ compiler and loaded with ctypes; None without a compiler."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    text = EMULATION + (kernel_source or cuda_ops.source()) + instantiations(extern_c=True)
    (folder / "kernels.cpp").write_text(text)
    subprocess.run([compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


def c_argument(value):
    """An array as a pointer to its first element; an integer as a long long."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    return ctypes.c_longlong(int(value))


def launch(library, name, grid: int, block: int, *arguments):
    """Run kernel ``name`` on ``grid`` blocks of ``block`` threads, as CuPy's ``kernel((grid,), (block,), args)``."""
    ctype = "plain" if name in cuda_ops.PLAIN_KERNELS else "float" if arguments[0].dtype == np.float32 else "double"
    error = getattr(library, f"{name}_{ctype}")(c_argument(grid), c_argument(block),
                                                *[c_argument(a) for a in arguments])
    if error:
        raise RuntimeError(f"kernel {name}: {LAUNCH_ERRORS[error]}")


def launch_size(name: str, arguments) -> tuple:
    """(grid, block): the launch CudaOps makes for these arguments (cuda_ops.grid_stride_blocks, gemm_blocks)."""
    if name in cuda_ops.PLAIN_KERNELS:
        return 1, 1
    if name == "gemm":
        m, n, _, _, _, _, _, splits, _ = arguments[3]
        return cuda_ops.gemm_blocks(int(m), int(n), int(splits)), cuda_ops.GEMM_TILE ** 2
    return cuda_ops.grid_stride_blocks(arguments[OUTPUT_ARGUMENT[name]].size), cuda_ops.THREADS


def call(library, name, *arguments):
    """Launch kernel ``name`` on NumPy arrays with the grid and block sizes CudaOps would use."""
    launch(library, name, *launch_size(name, arguments), *arguments)
