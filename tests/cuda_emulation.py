"""tinyflux's CUDA kernels (tinyflux/backends/kernels.cu) compiled and run on the CPU, for the tests.

The source is compiled with the machine's C++ compiler behind a few lines
(``EMULATION``) that define CUDA's ``__global__``, ``threadIdx``,
``__syncthreads`` and friends for one block of four CPU threads running at
once, so each grid-stride loop splits its elements four ways and ``gemm``
fills its 2 x 2 tiles of shared memory from all four. ``call`` launches one
kernel on NumPy arrays. The tests compare the results with the NumPy
implementations (tests/test_cuda_kernels.py), and ``FakeCupy``
(tests/fake_cupy.py) launches them in CuPy's place.
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


def compile_for_the_cpu(folder: Path):
    """kernels.cu compiled with the C++ compiler behind EMULATION, loaded with ctypes; None without a compiler."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    (folder / "kernels.cpp").write_text(EMULATION + cuda_ops.source() + instantiations(extern_c=True))
    subprocess.run([compiler, "-std=c++20", "-O1", "-pthread", f"-DBLOCK_THREADS={BLOCK_THREADS}",
                    f"-DGEMM_TILE={GEMM_TILE}", "-shared", "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


def c_argument(value):
    """An array as a pointer to its first element; an integer as a long long."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    return ctypes.c_longlong(int(value))


def call(library, name, *arrays):
    ctype = "plain" if name in cuda_ops.PLAIN_KERNELS else "float" if arrays[0].dtype == np.float32 else "double"
    getattr(library, f"{name}_{ctype}")(*[c_argument(a) for a in arrays])


