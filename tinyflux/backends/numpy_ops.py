"""NumPy implementations of the hot operations, behind one object: ``NumpyOps``.

Every op in tinyflux (``tinyflux/functional``) does its arithmetic itself
when the arithmetic is a line or two of array code, and asks an *ops
object* for the operations that a backend may want to do its own way: a
convolution, a convolution with the max-pooling after it, max-pooling,
bias + ReLU, ReLU's backward, the matrix product and the Adam update.
``tinyflux.backends.ops_for(array)`` returns the ops object for an array:
this one for NumPy arrays (and, written against ``xp``, for CuPy arrays when
tinyflux's own CUDA kernels are off), ``CudaOps`` for CuPy arrays otherwise.
An op calls the ops object it gets and never asks what kind of array it
holds; a new backend is a subclass that overrides what it does differently
(see ``tinyflux/backends/__init__.py``).

How a convolution and its pooling run is each backend's own choice, made
inside its ``conv_pool``: here with columns ordered by pooling-window offset
(one GEMM, then a maximum over whole blocks); ``NumbaOps`` with its kernels
where they are compiled for the dtype, else as here; ``CudaOps`` as a
convolution, then a pooling (:meth:`NumpyOps.conv_then_pool`). The caller,
``ConvMaxPoolFunction``, makes one call and keeps one object for backward.

The math of each operation is in the docstring of the op that uses it
(``tinyflux/functional/convolution.py`` for im2col and pooling,
``tinyflux/optim.py`` for Adam); the column copies are in ``columns.py``;
here is how NumPy does the rest fast.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .arrays import get_array_module
from .buffers import page_aligned
from .columns import (col2im, col2im_pooled, col2im_shifted, extended_gradient, im2col,
                      im2col_pooled, im2col_shifted)
from .geometry import (PoolGeometry, channels_first, index_along, memory_order, output_size,
                       pool_geometry, pooled_inside, pooled_to_batch_first, window_slice)


def _maxpool_1d(x, axis: int, k: int, s: int):
    """Max over windows of k positions every s positions along one axis; also which offset won."""
    xp = get_array_module(x)
    out = output_size(x.shape[axis], k, s, 0)
    # k views, each (..., out, ...)
    views = [x[index_along(axis, window_slice(offset, out, s), x.ndim)] for offset in range(k)]
    if k == 1:
        return views[0].copy(order="K"), xp.zeros_like(views[0], dtype=xp.uint8)
    # a new array in x's memory order (channel-major after a conv)
    y = xp.maximum(views[0], views[1])
    # offset of the maximum in each window: 1 where offset 1 wins; strict, so ties keep offset 0. A
    # bool result seen as uint8 (no copy): dpnp accepts only a bool output for a comparison
    wins = xp.empty_like(y, dtype=bool)
    xp.greater(views[1], views[0], out=wins)
    argmax = wins.view(xp.uint8)
    # windows of 3 or more; new arrays, because dpnp has no in-place maximum(y, v, out=y)
    for offset in range(2, k):
        better = views[offset] > y
        y = xp.maximum(y, views[offset])
        # argmax = offset where better, else unchanged. Offsets only grow, so a maximum does it:
        # max(argmax, better * offset). (np.copyto(argmax, offset, where=better) is much slower.)
        argmax = xp.maximum(argmax, better.view(xp.uint8) * xp.uint8(offset))
    return y, argmax


def _maxpool_1d_backward(gy, x, argmax, axis: int, k: int, s: int):
    """Send each output gradient to the input position that won its window (x: the pass's input)."""
    xp = get_array_module(gy)
    n_out = gy.shape[axis]
    tiled = s == k and x.shape[axis] == n_out * k  # windows cover every input position exactly once
    # same memory order as x; where windows skip positions
    # (a floored remainder, a gap) they keep gradient 0
    gx = xp.empty_like(x) if tiled else xp.zeros_like(x)
    targets = [gx[index_along(axis, window_slice(offset, n_out, s),
                              gy.ndim)] for offset in range(k)]
    # the common 2-wide window: argmax is 0 or 1, so gy * argmax is offset 1's share
    if k == 2 and s >= k:
        xp.multiply(gy, argmax, out=targets[1])
        # and the rest is offset 0's (2 passes instead of 4)
        xp.subtract(gy, targets[1], out=targets[0])
        return gx
    for offset, target in enumerate(targets):
        if s >= k:  # windows do not overlap: each input position receives from one window only
            xp.multiply(gy, argmax == offset, out=target)
        else:
            target += gy * (argmax == offset)
    return gx


class Columns(NamedTuple):
    """What :meth:`NumpyOps.im2col` built, and what the backward pass needs to undo it."""

    # (C, *K, N, *E): E the positions computed per image, Q or more (see im2col_shifted)
    col: object
    extended: tuple  # (N, *E)
    x_shape: tuple  # (N, C, *S) of the input
    kernel: tuple
    stride: tuple
    pad: tuple
    shifted: bool  # built by im2col_shifted: E has extra positions to drop


class MaxPoolSaved(NamedTuple):
    """What max-pooling keeps for its backward pass: the
    input's shape, the window, and where each maximum was."""

    x_shape: tuple
    window: tuple
    stride: tuple
    # NumpyOps: a list of (axis, k, s, pass input, argmax) per 1-D pass; CudaOps: argmax
    winners: object


class ConvSaved(NamedTuple):
    """What :meth:`NumpyOps.conv` keeps for its backward pass."""

    columns: Columns
    out: tuple  # Q, the output's spatial sizes


class PooledColumnsSaved(NamedTuple):
    """What :meth:`NumpyOps.conv_pool` keeps for its backward pass."""

    col_mat: object  # (C*prod(K), k^d*E): the columns, ordered by window offset
    col_shape: tuple  # (C, *K, *k, E)
    geometry: PoolGeometry
    passes: list  # what maxpool_blocks_backward needs
    # (N, O, *U): relu(pooled + bias) where the op adds a bias and a ReLU, else None
    activated: object


class ConvThenPoolSaved(NamedTuple):
    """What :meth:`NumpyOps.conv_then_pool` keeps for its backward pass."""

    conv: object  # what conv saved
    pool: MaxPoolSaved
    activated: object  # as in PooledColumnsSaved


class BatchNormPoolSaved(NamedTuple):
    """What :meth:`NumpyOps.batch_norm_pool` keeps for its backward pass."""

    x_hat: object  # (N, C, *S): the normalised input
    inv_std: object  # (C,)
    gamma: object  # (C,)
    activated: object  # (N, C, *S): relu of the affine output, or None without a ReLU
    pool: MaxPoolSaved


class NumpyOps:
    """The hot operations in NumPy-style code (which CuPy also runs, slice by slice)."""

    cupy = None  # ops that can record CUDA graphs hold the CuPy module they launch with (CudaOps)

    def limit_threads(self, threads: int) -> None:
        """Threads for this backend's own kernels: none
        here (BLAS has its own limit, see distributed.py)."""

    def matmul(self, a, b):
        """a @ b for 2-D arrays, into a page-aligned result (see :func:`page_aligned`)."""
        xp = get_array_module(a)
        return xp.matmul(a, b, out=page_aligned(xp, (a.shape[0], b.shape[1]), xp.result_type(a, b)))

    # -- convolution: columns and one GEMM (the math is in functional/convolution.py) --------------
    def conv(self, x, w, b, stride: tuple, pad: tuple):
        """(y (N, O, *Q), saved): the convolution of x (N,
        C, *S) with w (O, C, *K), plus b (O,) unless None."""
        xp = get_array_module(x)
        o, c = w.shape[:2]
        kernel = tuple(w.shape[2:])
        d = len(kernel)
        # col (C, *K, N, *E), E the positions computed
        columns = self.im2col(x, kernel, stride, pad)
        out = tuple(output_size(sz, k, st, p)
                    for sz, k, st, p in zip(x.shape[2:], kernel, stride, pad))
        # (C, *K, N, *E) -> (C*prod(K), N*E)
        col_mat = columns.col.reshape(c * math.prod(kernel), -1)
        y = self.matmul(w.reshape(o, -1), col_mat)  # (O, C*prod(K)) @ (C*prod(K), N*E) -> (O, N*E)
        if b is not None:
            y += b[:, None]  # (O,) -> (O, 1), broadcast over all positions
        y = y.reshape((o,) + columns.extended)  # (O, N*E) -> (O, N, *E)
        if columns.shifted:  # drop the extra positions; the copy makes the rows contiguous again,
            # which pooling runs faster on
            kept = (slice(None), slice(None)) + tuple(slice(0, q) for q in out)
            y = xp.ascontiguousarray(y[kept])
        # (O, N, *Q) -> (N, O, *Q) view
        return y.transpose(channels_first(d)), ConvSaved(columns, out)

    def conv_backward(self, gy, w, saved: ConvSaved, needs: tuple):
        """(gx, gw, gb), each None where ``needs`` says no,
        from the gradient gy (N, O, *Q) of :meth:`conv`."""
        columns, out = saved
        o = w.shape[0]
        d = w.ndim - 2
        xp = get_array_module(gy)
        gy_cn = gy.transpose(channels_first(d))  # (N, O, *Q) -> (O, N, *Q)
        if columns.shifted:  # back to the extended positions; the extra ones get gradient 0
            gy_ext = xp.empty((o,) + columns.extended, dtype=gy.dtype)  # (O, N, *E)
            gy_ext[(slice(None), slice(None)) + tuple(slice(0, q) for q in out)] = gy_cn
            # zero only the extra positions past Q on the later axes
            for axis in range(3, gy_ext.ndim):
                gy_ext[index_along(axis, slice(out[axis - 2], None), gy_ext.ndim)] = 0
            gy_mat = gy_ext.reshape(o, -1)  # (O, N, *E) -> (O, N*E)
        else:
            # (O, N, *Q) -> (O, N*P), a copy unless gy is channel-major
            gy_mat = gy_cn.reshape(o, -1)
        col_mat = columns.col.reshape(-1, gy_mat.shape[1])  # -> (C*prod(K), N*E)
        gx = gw = gb = None
        if needs[0]:
            # (C*prod(K), O) @ (O, N*E) -> (C*prod(K), N*E)
            gcol = self.matmul(w.reshape(o, -1).T, gy_mat)
            # (C*prod(K), N*E) -> (C, *K, N, *E)
            gx = self.col2im(gcol.reshape(columns.col.shape), columns)
        if needs[1]:
            # (C*prod(K), N*E) @ (N*E, O) -> (C*prod(K), O), transposed to (O, C*prod(K)) ->
            # (O, C, *K). Same numbers as gy_mat @ col_mat.T; OpenBLAS runs this orientation faster.
            gw = self.matmul(col_mat, gy_mat.T).T.reshape(w.shape)
        if len(needs) > 2 and needs[2]:
            gb = gy_mat.sum(axis=1)  # (O,)
        return gx, gw, gb

    # -- convolution and max-pooling as one op -----------------------------------------------------
    def conv_pool(self, x, w, b, pad: tuple, window: tuple):
        """(pooled (N, O, *U), saved): maxpool(conv(x, w)) for a stride-1
        convolution, windows of ``window`` tiling its output; with a bias
        b (O,), relu(that + b). Here: columns ordered by window offset."""
        o, d = w.shape[0], w.ndim - 2
        col, geometry = self.im2col_pooled(x, tuple(w.shape[2:]), pad, window)  # (C, *K, *k, E)
        col_mat = col.reshape(math.prod(w.shape[1:]), -1)  # (C, *K, *k, E) -> (C*prod(K), k^d*E)
        # (O, C*prod(K)) @ (C*prod(K), k^d*E) -> (O, k^d*E)
        y = self.matmul(w.reshape(o, -1), col_mat)
        y = y.reshape((o,) + tuple(window) + geometry.extended)  # -> (O, *k, U1, N, L2, ...)
        pooled, passes = self.maxpool_blocks(y, d)  # (O, U1, N, L2, ...)
        inside = pooled[pooled_inside(geometry)]  # (O, U1, N, U2, ...)
        # (O, U1, N, U2, ...) -> (N, O, U1, U2, ...) view
        pooled = inside.transpose(pooled_to_batch_first(d))
        activated = None if b is None else self.bias_relu(pooled, b)  # the numbers BiasReLU gives
        saved = PooledColumnsSaved(col_mat, col.shape, geometry, passes, activated)
        return (pooled if b is None else activated), saved

    def conv_pool_backward(self, gy, w, saved: PooledColumnsSaved, needs: tuple):
        """(gx, gw), and gb where the op added a bias (each None where ``needs`` says no), from the
        gradient gy (N, O, *U) of :meth:`conv_pool`'s output."""
        o = w.shape[0]
        gb = None
        if saved.activated is not None:  # as BiasReLU.backward
            gy, gb = self.bias_relu_backward(gy, saved.activated, needs[2])
        # (N, O, U1, U2, ...) -> (O, U1, N, L2, ...), 0 at extras
        gy_ext = extended_gradient(gy, saved.geometry)
        # (O, *k, *E) -> (O, k^d*E)
        gy_mat = self.maxpool_blocks_backward(gy_ext, saved.passes).reshape(o, -1)
        gx = gw = None
        if needs[0]:
            # (C*prod(K), O) @ (O, k^d*E) -> (C*prod(K), k^d*E)
            gcol = self.matmul(w.reshape(o, -1).T, gy_mat)
            gx = self.col2im_pooled(gcol.reshape(saved.col_shape), saved.geometry)  # -> (N, C, *S)
        if needs[1]:
            # (C*prod(K), k^d*E) @ (k^d*E, O) -> (C*prod(K), O), transposed to
            # (O, C*prod(K)) -> (O, C, *K), the orientation conv_backward uses
            gw = self.matmul(saved.col_mat, gy_mat.T).T.reshape(w.shape)
        return (gx, gw) if saved.activated is None else (gx, gw, gb)

    def conv_then_pool(self, x, w, b, pad: tuple, window: tuple):
        """:meth:`conv_pool`'s result as two ops, :meth:`conv` then :meth:`maxpool` (then bias and
        ReLU): for a backend whose own kernels run each of those in one launch (CudaOps)."""
        d = w.ndim - 2
        y, conv_saved = self.conv(x, w, None, (1,) * d, pad)  # (N, O, *Q)
        pooled, pool_saved = self.maxpool(y, window, window)  # (N, O, *U)
        activated = None if b is None else self.bias_relu(pooled, b)
        saved = ConvThenPoolSaved(conv_saved, pool_saved, activated)
        return (pooled if b is None else activated), saved

    def conv_then_pool_backward(self, gy, w, saved: ConvThenPoolSaved, needs: tuple):
        """The gradients of :meth:`conv_then_pool`, as :meth:`conv_pool_backward` gives them."""
        gb = None
        if saved.activated is not None:
            gy, gb = self.bias_relu_backward(gy, saved.activated, needs[2])
        gy = self.maxpool_backward(gy, saved.pool)  # (N, O, *U) -> (N, O, *Q)
        gx, gw, _ = self.conv_backward(gy, w, saved.conv, needs[:2])
        return (gx, gw) if saved.activated is None else (gx, gw, gb)

    # -- the copies behind them --------------------------------------------------------------------
    def im2col(self, x, kernel: tuple, stride: tuple, pad: tuple) -> Columns:
        """The columns of a convolution of x (N, C, *S):
        the shifted slices for stride 1, else plain im2col."""
        if all(s == 1 for s in stride):
            col, extended = im2col_shifted(x, kernel, pad)  # (C, *K, N, E)
            return Columns(col, tuple(extended), tuple(x.shape), kernel, stride, pad, shifted=True)
        col = im2col(x, kernel, stride, pad)  # (C, *K, N, *Q)
        return Columns(col, tuple(col.shape[1 + len(kernel):]), tuple(x.shape), kernel, stride,
                       pad, shifted=False)

    def col2im(self, gcol, columns: Columns):
        """The adjoint of :meth:`im2col`: gcol shaped like ``columns.col`` -> gx (N, C, *S)."""
        if columns.shifted:
            return col2im_shifted(gcol, columns.x_shape, columns.kernel, columns.pad)
        return col2im(gcol, columns.x_shape, columns.kernel, columns.stride, columns.pad)

    def im2col_pooled(self, x, kernel: tuple, pad: tuple, window: tuple):
        """(col (C, *K, *k, E), geometry): the columns of
        a stride-1 convolution that max-pooling follows."""
        geometry = pool_geometry(tuple(x.shape), kernel, pad, window, memory_order(x))
        return im2col_pooled(x, geometry), geometry

    def col2im_pooled(self, gcol, geometry: PoolGeometry):
        """The adjoint of :meth:`im2col_pooled`: gcol (C, *K, *k, E) -> gx (N, C, *S)."""
        return col2im_pooled(gcol, geometry)

    def maxpool_blocks(self, y, d: int):
        """Max-pooling of a convolution output laid out by window offset: y (O, *k, *E) -> (O, *E).

        The window offsets are axes of their own here, so each 1-D pass of
        :meth:`maxpool` compares whole contiguous blocks. The last window axis
        goes first, which keeps the tie rule of :meth:`maxpool`.
        """
        passes = []
        for axis in reversed(range(1, 1 + d)):
            k = y.shape[axis]
            pooled, argmax = _maxpool_1d(y, axis, k, k)  # axis ``axis`` shrinks from k to 1
            passes.append((axis, k, k, y, argmax))
            y = pooled
        return y.reshape(y.shape[:1] + y.shape[1 + d:]), passes  # (O, 1, ..., 1, *E) -> (O, *E)

    def maxpool_blocks_backward(self, gy, passes: list):
        """Each gradient of gy (O, *E) to its window's winner:
        -> (O, *k, *E), laid out as the GEMM's output."""
        d = len(passes)
        gy = gy.reshape(gy.shape[:1] + (1,) * d + gy.shape[1:])  # (O, *E) -> (O, 1, ..., 1, *E)
        for axis, k, s, x, argmax in reversed(passes):
            gy = _maxpool_1d_backward(gy, x, argmax, axis, k, s)
        return gy

    def maxpool(self, x, window: tuple, stride: tuple):
        """(y (N, C, *Q), what backward needs): one 1-D pass per spatial axis.

        W first, then H (then T): on a tie this picks the first maximum in row-major order, as
        PyTorch does. (H first would be a little faster but would prefer the first column instead.)
        """
        passes = []  # (axis, kernel, stride, pass input, argmax) per 1-D pass, for backward
        for axis in reversed(range(2, x.ndim)):
            k, s = window[axis - 2], stride[axis - 2]
            y, argmax = _maxpool_1d(x, axis, k, s)
            passes.append((axis, k, s, x, argmax))
            x = y
        return x, MaxPoolSaved(None, window, stride, passes)

    def maxpool_backward(self, gy, saved: MaxPoolSaved):
        """Each output gradient to the input that won
        its window: the passes undone in reverse order."""
        for axis, k, s, x, argmax in reversed(saved.winners):
            gy = _maxpool_1d_backward(gy, x, argmax, axis, k, s)
        return gy

    def channel_moments(self, x):
        """(mean, var) (C,) of x (N, C, *S) over every axis but the channels; var is the
        biased one (divided by the count m), as batch normalisation uses it."""
        axes = (0,) + tuple(range(2, x.ndim))
        return x.mean(axis=axes), x.var(axis=axes)

    def batch_norm(self, x, mean, inv_std, gamma, beta):
        """(y, x_hat) for x (N, C, *S): x_hat = (x - mean) * inv_std, y = gamma x_hat + beta,
        with one number per channel in each of the four (C,)."""
        # (C,) -> (1, C, 1, ...): broadcast over batch and positions
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        return x_hat * gamma.reshape(shape) + beta.reshape(shape), x_hat

    def batch_norm_backward(self, gy, x_hat, inv_std, gamma, training: bool, needs: tuple):
        """(gx, g_gamma, g_beta), each None where ``needs`` says so, by the formulas in
        ``tinyflux/functional/normalization.py``; without ``training`` the statistics were
        constants, and gx is gy scaled."""
        axes = (0,) + tuple(range(2, gy.ndim))
        shape = (1, -1) + (1,) * (gy.ndim - 2)  # (C,) -> (1, C, 1, ...)
        m = gy.size // gy.shape[1]
        g_beta = gy.sum(axis=axes)
        g_gamma = (gy * x_hat).sum(axis=axes)
        scale = (gamma * inv_std).reshape(shape)
        if not needs[0]:
            gx = None
        elif training:  # the batch's statistics depend on every x: the two extra terms
            gx = scale / m * (m * gy - g_beta.reshape(shape) - x_hat * g_gamma.reshape(shape))
        else:
            gx = gy * scale
        return gx, (g_gamma if needs[1] else None), (g_beta if needs[2] else None)

    def batch_norm_pool(self, x, mean, inv_std, gamma, beta, window: tuple, relu: bool):
        """(y (N, C, *U), saved): maxpool(relu(batch_norm(x))) with windows that tile (stride =
        window), or without the ReLU. Here the three ops one after the other, as the layers
        would run them; ``NumbaOps`` runs them as one pass over memory."""
        y, x_hat = self.batch_norm(x, mean, inv_std, gamma, beta)
        activated = get_array_module(y).maximum(y, 0) if relu else None  # as F.relu
        pooled, pool = self.maxpool(y if activated is None else activated, window, window)
        return pooled, BatchNormPoolSaved(x_hat, inv_std, gamma, activated, pool)

    def batch_norm_pool_backward(self, gy, saved: BatchNormPoolSaved, training: bool,
                                 needs: tuple):
        """(gx, g_gamma, g_beta) from the gradient gy (N, C, *U) of the pooled output."""
        g = self.maxpool_backward(gy, saved.pool)
        if saved.activated is not None:
            g = self.relu_backward(g, saved.activated)
        return self.batch_norm_backward(g, saved.x_hat, saved.inv_std, saved.gamma, training,
                                        needs)

    def bias_relu(self, x, b):
        """relu(x + b) for x (N, C, *S) and one bias per channel b (C,); keeps x's memory order."""
        # (C,) -> (1, C, 1, ...): broadcast over batch and positions
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = x + b.reshape(shape)
        get_array_module(x).maximum(y, 0, out=y)
        return y

    def bias_relu_backward(self, gy, y, bias_needed: bool = True):
        """(gx, gb) for y = relu(x + b): gx = gy where y > 0, else 0; gb its sum over all axes but
        channels (None when the bias needs no gradient)."""
        gx = self.relu_backward(gy, y)
        gb = gx.sum(axis=(0,) + tuple(range(2, gx.ndim))) if bias_needed else None
        return gx, gb

    def relu_backward(self, gy, y):
        """The gradient through a ReLU whose output was y: gy where y > 0, else 0."""
        # multiplying by a boolean mask is several times faster than np.where(y > 0, gy, 0)
        return gy * (y > 0)

    def count_step(self, hyper) -> None:
        """Advance Adam's step count t, the last of its numbers
        in ``hyper`` (in the order of optim.ADAM_NUMBERS)."""
        hyper[-1] += 1

    def adam_update(self, p, g, m, v, hyper) -> None:
        """One Adam step over arrays of one shape, in place, with ``hyper``
        = (lr, beta1, beta2, eps, t), the order of optim.ADAM_NUMBERS.

        Both bias corrections are folded into two numbers: lr * m_hat / (sqrt(v_hat) + eps)
        = step_size * m / (sqrt(v) + eps_scaled), which saves two passes over each array.
        """
        lr, b1, b2, eps, t = hyper.tolist()  # one read, also from a GPU
        bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
        step_size = lr * math.sqrt(bias2) / bias1
        eps_scaled = eps * math.sqrt(bias2)
        xp = get_array_module(g)
        m += (1 - b1) * (g - m)  # same as m = b1*m + (1-b1)*g, in place
        v += (1 - b2) * (g * g - v)
        denom = xp.sqrt(v)
        denom += eps_scaled
        p -= step_size * m / denom
