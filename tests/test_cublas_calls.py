"""tinyflux/backends/cublas_calls.py against NumPy's matmul: the row-major product computed by a column-major GEMM,
on the stand-in cuBLAS (tests/fake_cupy.py), which reads the host memory at the addresses and leading dimensions it
is given as cuBLAS would read the GPU's."""
import numpy as np
import pytest

from fake_cupy import FakeCupy
from tinyflux.backends import cublas_calls


@pytest.fixture
def calls(monkeypatch):
    fake = FakeCupy(library=None)  # no kernels are launched here
    monkeypatch.setattr(cublas_calls, "device_pointer", lambda array: array.ctypes.data)
    return cublas_calls.CublasCalls(fake.cublas_library, fake)


def layouts(rng, rows, cols, dtype):
    """The same (rows, cols) values as a C-contiguous array, a transposed view of one (F-contiguous), and a view
    with a step in both axes (neither: copied first)."""
    values = rng.standard_normal((rows, cols)).astype(dtype)
    stepped = np.zeros((2 * rows, 3 * cols), dtype)
    stepped[::2, ::3] = values
    return [values, np.ascontiguousarray(values.T).T, stepped[::2, ::3]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(5, 7, 3), (1, 4, 6), (8, 1, 8), (3, 5, 1)])
def test_every_layout_of_both_factors_gives_numpy_s_product(calls, rng, dtype, m, k, n):
    for a in layouts(rng, m, k, dtype):
        for b in layouts(rng, k, n, dtype):
            out = calls.matmul(a, b)
            assert out.shape == (m, n) and out.dtype == dtype and out.flags.c_contiguous
            np.testing.assert_allclose(out, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_empty_factors_give_empty_or_zero_products(calls):
    assert calls.matmul(np.ones((0, 3), np.float32), np.ones((3, 4), np.float32)).shape == (0, 4)
    np.testing.assert_array_equal(calls.matmul(np.ones((2, 0), np.float32), np.ones((0, 4), np.float32)),
                                  np.zeros((2, 4), np.float32))


def test_the_handle_gets_its_workspace_after_each_new_stream(calls):
    """Setting a stream takes cuBLAS back to its own workspace pool, so the workspace is given again after it."""
    library, a = calls.library, np.ones((2, 2), np.float32)
    calls.matmul(a, a)
    state = library.handles[calls.handle.value]
    assert state["stream"] == 0 and state["workspace"] == (calls.workspace.ptr, cublas_calls.WORKSPACE_BYTES)
    with calls.cupy.cuda.Stream(non_blocking=True) as stream:
        calls.matmul(a, a)
    assert state["stream"] == stream.ptr and state["workspace"] == (calls.workspace.ptr, cublas_calls.WORKSPACE_BYTES)


def test_a_failing_call_names_its_status(calls, monkeypatch):
    monkeypatch.setattr(calls.library, "cublasSgemm_v2", lambda *args: 13)  # CUBLAS_STATUS_EXECUTION_FAILED
    with pytest.raises(cublas_calls.CublasError, match="cublas gemm returned cuBLAS status 13"):
        calls.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
