"""The plain stride-1 convolution in blocks (tinyflux/backends/numba_conv.py) against NumpyOps.conv, the
reference: values, gradients, dtypes, empty outputs, and the same bits on any number of threads."""
import numpy as np
import pytest

from tinyflux import backends

numba = pytest.importorskip("numba", reason="Numba is not installed (pip install 'tinyflux[fast]')")
from tinyflux.backends import numba_blocks, numba_conv  # noqa: E402 (only where Numba is)
from tinyflux.backends.numba_ops import NumbaOps  # noqa: E402


CONV_CASES = [
    # (input spatial sizes, kernel, pad): plain stride-1 convolutions, which take numba_conv.conv_blocks
    ((7, 9, 6), (3, 3, 3), (1, 1, 1)),  # the own-clips model's layers, small
    ((5, 6, 4), (2, 3, 1), (0, 2, 1)),  # unequal kernel and padding, no padding along time
    ((9, 11), (2, 3), (0, 2)),  # 2-D
    ((17,), (5,), (2,)),  # 1-D
    ((5, 4), (3, 3), (3, 0)),  # more padding than input on one side
]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes,kernel,pad", CONV_CASES)
def test_plain_convolution_in_blocks_matches_the_numpy_path(rng, sizes, kernel, pad, dtype, with_bias):
    """conv_blocks writes each block's outputs straight to their compact place (the bias added on the
    way) and reads the gradient back from there: the same y, gx, gw and gb as NumpyOps.conv."""
    numba_ops, numpy_ops = NumbaOps(), backends.NumpyOps()
    stride = (1,) * len(kernel)
    # a batch-second input and a gradient in yet another layout: neither need be contiguous
    x = rng.standard_normal((3, 2) + sizes).astype(dtype).swapaxes(0, 1)  # (C, N, *S) -> (N, C, *S) view
    w = rng.standard_normal((4, 3) + kernel).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if with_bias else None
    y, saved = numba_ops.conv(x, w, b, stride, pad)
    y_ref, saved_ref = numpy_ops.conv(x, w, b, stride, pad)
    assert isinstance(saved, numba_conv.ConvBlockSaved)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, y_ref, rtol=tolerance, atol=tolerance)
    gy = np.cos(np.arange(y.size)).reshape(y.shape[::-1]).astype(dtype).T  # every output its own gradient
    needs = (True, True, with_bias)
    got, expected = numba_ops.conv_backward(gy, w, saved, needs), numpy_ops.conv_backward(gy, w, saved_ref, needs)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None
        else:
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=tolerance, atol=tolerance * np.abs(e).max())


def test_plain_convolution_with_mixed_dtypes_takes_the_numpy_path(rng):
    """A float64 bias or weights beside a float32 input: NumpyOps's route, and the dtype it gives."""
    numba_ops, numpy_ops = NumbaOps(), backends.NumpyOps()
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    for w_dtype, b_dtype in ((np.float32, np.float64), (np.float64, np.float32)):
        w = rng.standard_normal((4, 3, 3, 3)).astype(w_dtype)
        b = rng.standard_normal(4).astype(b_dtype)
        y, saved = numba_ops.conv(x, w, b, (1, 1), (1, 1))
        y_ref, _ = numpy_ops.conv(x, w, b, (1, 1), (1, 1))
        assert not isinstance(saved, numba_conv.ConvBlockSaved)
        assert y.dtype == y_ref.dtype
        np.testing.assert_allclose(y, y_ref, rtol=1e-6)


def test_plain_convolution_with_an_empty_output_gives_what_numpy_gives(rng):
    """No output positions (an input smaller than the kernel, which the layers refuse before this):
    NumpyOps's empty result, not an error from cutting nothing into blocks."""
    numba_ops, numpy_ops = NumbaOps(), backends.NumpyOps()
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    x = np.ones((1, 1, 2, 2), np.float32)
    y, _ = numba_ops.conv(x, w, None, (1, 1), (0, 0))
    y_ref, _ = numpy_ops.conv(x, w, None, (1, 1), (0, 0))
    assert y.shape == y_ref.shape == (1, 2, 0, 0)


def test_plain_convolution_adds_the_bias_once_in_its_own_rounding(rng):
    """With a bias, each stored output is the GEMM's output plus the bias, rounded once: the same bits as
    adding the bias to the outputs stored without one."""
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y, _ = numba_conv.conv_blocks(x, w, None, (1, 1), 2)
    y_b, _ = numba_conv.conv_blocks(x, w, b, (1, 1), 2)
    assert np.ascontiguousarray(y_b).tobytes() == np.ascontiguousarray(y + b.reshape(1, 4, 1, 1)).tobytes()


@pytest.mark.parametrize("block_bytes", [None, 27 * 4 * 4 * 7], ids=["default-blocks", "many-small-blocks"])
def test_plain_convolution_is_the_same_bits_on_one_two_and_three_threads(rng, monkeypatch, block_bytes):
    """Blocks of every size cut rows of the extended layout anywhere: the compact output and all three
    gradients are the same bits whatever the lanes, and match the NumPy path."""
    if block_bytes:
        monkeypatch.setattr(numba_blocks, "BLOCK_BYTES", block_bytes)
    x = rng.standard_normal((5, 4, 6, 9, 7)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    results = []
    for lanes in (1, 2, 3):
        y, saved = numba_conv.conv_blocks(x, w, b, (1, 1, 1), lanes)
        gy = np.sin(np.arange(y.size)).reshape(y.shape).astype(np.float32)
        results.append([np.ascontiguousarray(y), *numba_conv.conv_blocks_backward(
            gy, w, saved, (True, True, True), lanes)])
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert a.tobytes() == b_.tobytes()
    numpy_ops = backends.NumpyOps()
    y_ref, saved_ref = numpy_ops.conv(x, w, b, (1, 1, 1), (1, 1, 1))
    gy = np.sin(np.arange(y_ref.size)).reshape(y_ref.shape).astype(np.float32)
    expected = (y_ref, *numpy_ops.conv_backward(gy, w, saved_ref, (True, True, True)))
    for got, e in zip(results[0], expected):
        np.testing.assert_allclose(got, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
