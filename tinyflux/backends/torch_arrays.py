"""NumPy's interface on PyTorch's tensors: how tinyflux reaches every GPU that PyTorch reaches.

tinyflux's ops are written once against NumPy's interface (``xp =
get_array_module(x)``, then ``xp.zeros``, ``x.transpose(axes)``,
``x.sum(axis=...)``). CuPy and dpnp copy that interface, so their arrays run
the same code. PyTorch's tensors run on Apple's GPUs (MPS: Apple silicon, and
AMD GPUs in Intel Macs), on AMD GPUs (ROCm builds, where the device is still
called ``cuda``), on Intel GPUs (XPU) and on NVIDIA's, but their interface
differs in small ways: ``permute`` for NumPy's ``transpose``, ``dim`` for
``axis``, ``size()`` a method where NumPy's ``size`` is a number, torch
dtypes instead of NumPy's. So this module gives tensors NumPy's interface:

    TorchArray   one torch.Tensor with ndarray's attributes and methods
    TorchNumpy   one per device: the functions of the ``numpy`` module that tinyflux calls

Only tensors' arithmetic is used: no ``torch.nn``, no ``torch.autograd``
(every tensor here has ``requires_grad`` false). tinyflux's own engine
computes the gradients, as it does on NumPy and CuPy.

Two rules keep mistakes loud, as CuPy does. A TorchArray never turns into a
NumPy array by itself (``np.asarray`` refuses it; ``tf.cpu`` moves it), and
a NumPy array in an expression with a TorchArray is refused: a silent copy
between host and GPU in every step is the slowest bug there is. And a
device without float64 refuses every float64 array (``torch_dtypes.py``).
"""
from __future__ import annotations

import os
import numbers

import numpy as np
import torch

from .torch_dtypes import (FLOAT32_ONLY_VARIABLE, NO_FLOAT64_DEVICES, NUMPY_DTYPE, Float64Error,
                           no_float64_message, torch_dtype)


class TorchArray:
    """A torch.Tensor that answers NumPy's ndarray interface; ``.tensor`` is the tensor itself."""

    __slots__ = ("tensor",)
    # NumPy's operators hand over to ours (``2.0 * array`` calls __rmul__), never convert
    __array_ufunc__ = None

    def __init__(self, tensor: torch.Tensor):
        if tensor.dtype == torch.float64 and not namespace(tensor.device).has_float64:
            raise Float64Error(no_float64_message(tensor.device))
        self.tensor = tensor

    # -- what NumPy's ndarray tells about itself ----------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.tensor.shape)

    @property
    def ndim(self) -> int:
        return self.tensor.dim()

    @property
    def size(self) -> int:
        return self.tensor.numel()

    @property
    def dtype(self) -> np.dtype:
        return NUMPY_DTYPE[self.tensor.dtype]

    @property
    def itemsize(self) -> int:
        return self.tensor.element_size()

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    @property
    def strides(self) -> tuple:
        """In bytes, as NumPy gives them (torch counts elements)."""
        return tuple(step * self.tensor.element_size() for step in self.tensor.stride())

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @property
    def T(self) -> "TorchArray":
        return TorchArray(self.tensor.permute(tuple(reversed(range(self.tensor.dim())))))

    def __repr__(self) -> str:
        return f"TorchArray({self.tensor!r})"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"a TorchArray on {self.tensor.device} is not turned into a NumPy array "
                        "implicitly: move it with tf.cpu(...) or "
                        "tinyflux.backends.to_cpu_array(...)")

    # -- shape and memory ---------------------------------------------------------
    def reshape(self, *shape, order: str = "C") -> "TorchArray":
        if order != "C":
            raise NotImplementedError(f"reshape(order={order!r}): only NumPy's "
                                      "default order 'C' is supported")
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return TorchArray(self.tensor.reshape(tuple(int(s) for s in shape)))

    def transpose(self, *axes) -> "TorchArray":
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]  # transpose((1, 0)) as transpose(1, 0)
        reverse = tuple(reversed(range(self.tensor.dim())))  # NumPy's default: all axes reversed
        return TorchArray(self.tensor.permute(tuple(axes or ()) or reverse))

    def astype(self, dtype, copy: bool = True) -> "TorchArray":
        target = torch_dtype(dtype)
        if target == self.tensor.dtype and not copy:
            return self
        return TorchArray(self.tensor.to(target, copy=copy))

    def copy(self, order: str = "C") -> "TorchArray":
        """A new array; 'C' (NumPy's default) row-major, 'K' in this array's memory order."""
        layout = torch.preserve_format if order == "K" else torch.contiguous_format
        return TorchArray(self.tensor.clone(memory_format=layout))

    def view(self, dtype) -> "TorchArray":
        """The same memory seen as another dtype of the same size (a bool mask as uint8, say)."""
        return TorchArray(self.tensor.view(torch_dtype(dtype)))

    def ravel(self) -> "TorchArray":
        return TorchArray(self.tensor.reshape(-1))

    def fill(self, value) -> None:
        self.tensor.fill_(value)

    # -- reductions ----------------------------------------------------------------
    def sum(self, axis=None, dtype=None, keepdims: bool = False) -> "TorchArray":
        dims = _dims(axis, self.tensor.dim())
        return TorchArray(torch.sum(self.tensor, dim=dims, keepdim=keepdims,
                                    dtype=None if dtype is None else torch_dtype(dtype)))

    def mean(self, axis=None, dtype=None, keepdims: bool = False) -> "TorchArray":
        tensor = self.tensor
        if dtype is not None:
            tensor = tensor.to(torch_dtype(dtype))
        elif not tensor.is_floating_point():  # NumPy's mean of integers is float64
            tensor = tensor.to(torch.float64)
        return TorchArray(torch.mean(tensor, dim=_dims(axis, tensor.dim()), keepdim=keepdims))

    def var(self, axis=None, keepdims: bool = False, ddof: int = 0) -> "TorchArray":
        return TorchArray(torch.var(self.tensor, dim=_dims(axis, self.tensor.dim()),
                                    correction=ddof, keepdim=keepdims))

    def max(self, axis=None, keepdims: bool = False) -> "TorchArray":
        return TorchArray(torch.amax(self.tensor, dim=_dims(axis, self.tensor.dim()),
                                     keepdim=keepdims))

    def min(self, axis=None, keepdims: bool = False) -> "TorchArray":
        return TorchArray(torch.amin(self.tensor, dim=_dims(axis, self.tensor.dim()),
                                     keepdim=keepdims))

    def argmax(self, axis=None) -> "TorchArray":
        return TorchArray(torch.argmax(self.tensor, dim=axis))

    def any(self, axis=None) -> "TorchArray":
        return TorchArray(self.tensor.any() if axis is None else self.tensor.any(dim=axis))

    def all(self, axis=None) -> "TorchArray":
        return TorchArray(self.tensor.all() if axis is None else self.tensor.all(dim=axis))

    # -- to Python -----------------------------------------------------------------
    def tolist(self):
        return self.tensor.tolist()

    def item(self):
        return self.tensor.item()

    def __float__(self) -> float:
        return float(self.tensor.item())

    def __int__(self) -> int:
        return int(self.tensor.item())

    def __index__(self) -> int:
        if self.tensor.dtype.is_floating_point or self.tensor.numel() != 1:
            raise TypeError("only a single integer can be used as an index")
        return int(self.tensor.item())

    def __bool__(self) -> bool:
        return bool(self.tensor.item())

    def __len__(self) -> int:
        if self.tensor.dim() == 0:
            raise TypeError("len() of a 0-d array")
        return self.tensor.shape[0]

    def __iter__(self):
        return (TorchArray(row) for row in self.tensor)

    # -- indexing ------------------------------------------------------------------
    def __getitem__(self, key) -> "TorchArray":
        return TorchArray(self.tensor[_index(key, self.tensor.device)])

    def __setitem__(self, key, value) -> None:
        key = _index(key, self.tensor.device)
        if isinstance(value, TorchArray):
            value = value.tensor.to(self.tensor.dtype)
        elif isinstance(value, np.ndarray):  # CuPy too accepts a host array here: one explicit copy
            value = torch.from_numpy(np.array(value, order="C",
                                              copy=True)).to(self.tensor.device, self.tensor.dtype)
        elif isinstance(value, np.generic):
            value = value.item()
        self.tensor[key] = value

    # -- arithmetic (each operator: NumPy's broadcasting and result dtype) ----------
    def _binary(self, other, function, reflected: bool = False):
        other = _operand(other)
        if other is NotImplemented:
            return NotImplemented
        return TorchArray(function(other,
                                   self.tensor) if reflected else function(self.tensor, other))

    def _inplace(self, other, method: str):
        other = _operand(other)
        if other is NotImplemented:
            return NotImplemented
        getattr(self.tensor, method)(other)
        return self

    def __add__(self, other): return self._binary(other, torch.add)
    def __radd__(self, other): return self._binary(other, torch.add, reflected=True)
    def __sub__(self, other): return self._binary(other, torch.sub)
    def __rsub__(self, other): return self._binary(other, torch.sub, reflected=True)
    def __mul__(self, other): return self._binary(other, torch.mul)
    def __rmul__(self, other): return self._binary(other, torch.mul, reflected=True)
    def __truediv__(self, other): return self._binary(other, torch.true_divide)
    def __rtruediv__(self, other): return self._binary(other, torch.true_divide, reflected=True)
    def __floordiv__(self, other): return self._binary(other, torch.floor_divide)
    def __rfloordiv__(self, other): return self._binary(other, torch.floor_divide, reflected=True)
    def __mod__(self, other): return self._binary(other, torch.remainder)
    def __pow__(self, other): return self._binary(other, torch.pow)
    def __rpow__(self, other): return self._binary(other, torch.pow, reflected=True)
    def __matmul__(self, other): return self._binary(other, torch.matmul)
    def __rmatmul__(self, other): return self._binary(other, torch.matmul, reflected=True)
    def __and__(self, other): return self._binary(other, torch.bitwise_and)
    def __or__(self, other): return self._binary(other, torch.bitwise_or)
    def __xor__(self, other): return self._binary(other, torch.bitwise_xor)
    def __eq__(self, other): return self._binary(other, torch.eq)
    def __ne__(self, other): return self._binary(other, torch.ne)
    def __lt__(self, other): return self._binary(other, torch.lt)
    def __le__(self, other): return self._binary(other, torch.le)
    def __gt__(self, other): return self._binary(other, torch.gt)
    def __ge__(self, other): return self._binary(other, torch.ge)
    def __iadd__(self, other): return self._inplace(other, "add_")
    def __isub__(self, other): return self._inplace(other, "sub_")
    def __imul__(self, other): return self._inplace(other, "mul_")
    def __itruediv__(self, other): return self._inplace(other, "div_")
    def __ipow__(self, other): return self._inplace(other, "pow_")
    def __iand__(self, other): return self._inplace(other, "bitwise_and_")
    def __ior__(self, other): return self._inplace(other, "bitwise_or_")

    def __neg__(self):
        flip = torch.logical_not if self.tensor.dtype == torch.bool else torch.neg
        return TorchArray(flip(self.tensor))

    def __pos__(self): return self
    def __abs__(self): return TorchArray(torch.abs(self.tensor))
    def __invert__(self): return TorchArray(torch.bitwise_not(self.tensor))

    __hash__ = None  # like NumPy's arrays: == is elementwise, so arrays are not dict keys


def _dims(axis, ndim: int):
    """NumPy's ``axis`` (None, an int, a tuple) as torch's ``dim``: None -> every axis."""
    if axis is None:
        return tuple(range(ndim))
    return tuple(axis) if isinstance(axis, (tuple, list)) else axis


def _operand(value):
    """The other side of an operator as torch takes it: a tensor or a Python number; NotImplemented
    for a Tensor of tinyflux's (so that its reflected operator runs); NumPy arrays refused."""
    if isinstance(value, TorchArray):
        return value.tensor
    if isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.generic):
        return value
    # a NumPy scalar, such as x.dtype.type(0.5): a Python number keeps x's dtype
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise TypeError(f"a NumPy array {value.dtype}{value.shape} in an expression with a "
                        "TorchArray: move it first (xp.asarray(...), with xp = "
                        "get_array_module(the TorchArray))")
    return NotImplemented


def _index(key, device):
    """A NumPy index (slices, ints, index or mask arrays, None, ...) as torch takes it."""
    if isinstance(key, tuple):
        return tuple(_index(part, device) for part in key)
    if isinstance(key, TorchArray):
        return key.tensor
    if isinstance(key, np.ndarray):
        return torch.as_tensor(key, device=device)
    if isinstance(key, np.integer):
        return int(key)
    if isinstance(key, slice) and key.step is not None and key.step < 0:
        raise NotImplementedError("a negative slice step: PyTorch's tensors have no "
                                  "reversed views (use flip)")
    return key


class _Random:
    """``xp.random``: ``default_rng(seed)`` is NumPy's
    generator, whose arrays are moved to the device.

    Drawing on the host gives the numbers a NumPy run draws from the same seed, so a dropout mask
    here equals the CPU's; the cost is one copy of each mask to the device.
    """

    def __init__(self, namespace: "TorchNumpy", rng: np.random.Generator = None):
        self.namespace, self.rng = namespace, rng

    def default_rng(self, seed=None) -> "_Random":
        return _Random(self.namespace, np.random.default_rng(seed))

    def __getattr__(self, name: str):  # random, standard_normal, integers...: drawn, then moved
        draw = getattr(self.rng, name)
        return lambda *args, **kwargs: self.namespace.asarray(draw(*args, **kwargs))


_NAMESPACES: dict = {}


def namespace(device) -> "TorchNumpy":
    """The one TorchNumpy for a torch device (``"cpu"``, ``"mps"``, ``torch.device("cuda", 0)``)."""
    device = torch.device(device)
    # "cuda" and "cuda:0" are one device: one namespace
    if device.type != "cpu" and device.index is None:
        device = torch.device(device.type, torch.empty(0, device=device).device.index)
    float64 = device.type not in NO_FLOAT64_DEVICES and os.environ.get(FLOAT32_ONLY_VARIABLE) != "1"
    key = (str(device), float64)
    if key not in _NAMESPACES:
        _NAMESPACES[key] = TorchNumpy(device, float64)
    return _NAMESPACES[key]


class TorchNumpy:
    """The functions of the ``numpy`` module that tinyflux
    calls, making TorchArrays on one torch device."""

    ndarray = TorchArray
    float16, float32, float64 = np.float16, np.float32, np.float64
    int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
    uint8, bool_ = np.uint8, np.bool_
    newaxis, inf, nan, pi = None, np.inf, np.nan, np.pi

    def __init__(self, device: torch.device, float64: bool = True):
        self.device, self.has_float64 = device, float64
        self.random = _Random(self)
        self.__name__ = f"tinyflux.backends.torch_arrays(torch:{device})"

    def __repr__(self) -> str:
        only = "" if self.has_float64 else ", float32 only"
        return f"<NumPy's interface on torch:{self.device}{only}>"

    # -- making arrays ---------------------------------------------------------------
    def asarray(self, value, dtype=None) -> TorchArray:
        """A TorchArray on this device: no copy when
        ``value`` already is one there with this dtype."""
        if isinstance(value, TorchArray):
            tensor = value.tensor.to(self.device)
        elif isinstance(value, torch.Tensor):
            tensor = value.detach().to(self.device)
        else:
            host = np.asarray(value)
            if host.dtype.kind not in "biuf":
                raise TypeError(f"asarray: numbers expected, got {host.dtype} "
                                f"({type(value).__name__})")
            if host.dtype == np.float64 and not self.has_float64 and dtype is None:
                raise Float64Error(no_float64_message(self.device))
            if dtype is not None and host.dtype != np.dtype(dtype):
                # on the host: a float64 array reaches a float32-only device as float32
                host = host.astype(dtype)
            # always a copy, as CuPy's asarray makes: on torch's CPU
            # device a tensor sharing the host array's memory would let an
            # optimizer's in-place steps change the caller's NumPy array
            tensor = torch.from_numpy(np.array(host, order="C", copy=True)).to(self.device)
        return TorchArray(tensor if dtype is None else tensor.to(torch_dtype(dtype)))

    def array(self, value, dtype=None) -> TorchArray:
        made = self.asarray(value, dtype)
        same_memory = (isinstance(value, TorchArray)
                       and made.tensor.data_ptr() == value.tensor.data_ptr())
        return made.copy() if same_memory else made

    def ascontiguousarray(self, value) -> TorchArray:
        return TorchArray(self.asarray(value).tensor.contiguous())

    def _made(self, function, shape, dtype) -> TorchArray:
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
        return TorchArray(function(shape, dtype=torch_dtype(dtype), device=self.device))

    def zeros(self, shape, dtype=np.float64) -> TorchArray:
        return self._made(torch.zeros, shape, dtype)

    def ones(self, shape, dtype=np.float64) -> TorchArray:
        return self._made(torch.ones, shape, dtype)

    def empty(self, shape, dtype=np.float64) -> TorchArray:
        return self._made(torch.empty, shape, dtype)

    def _like(self, function, like: TorchArray, dtype) -> TorchArray:
        # torch's *_like keep the memory order of ``like``
        # (preserve_format), as NumPy's order="K" does
        return TorchArray(function(like.tensor,
                                   dtype=None if dtype is None else torch_dtype(dtype)))

    def zeros_like(self, like, dtype=None) -> TorchArray:
        return self._like(torch.zeros_like, like, dtype)

    def ones_like(self, like, dtype=None) -> TorchArray:
        return self._like(torch.ones_like, like, dtype)

    def empty_like(self, like, dtype=None) -> TorchArray:
        return self._like(torch.empty_like, like, dtype)

    def arange(self, start, stop=None, step=1, dtype=None) -> TorchArray:
        if stop is None:
            start, stop = 0, start
        return self.asarray(np.arange(start, stop, step, dtype=dtype))

    def eye(self, n: int, dtype=np.float64) -> TorchArray:
        return TorchArray(torch.eye(n, dtype=torch_dtype(dtype), device=self.device))

    def stack(self, arrays, axis: int = 0) -> TorchArray:
        return TorchArray(torch.stack([self.asarray(a).tensor for a in arrays], dim=axis))

    def concatenate(self, arrays, axis: int = 0) -> TorchArray:
        return TorchArray(torch.cat([self.asarray(a).tensor for a in arrays], dim=axis))

    def pad(self, array: TorchArray, pad_width, mode: str = "constant") -> TorchArray:
        """Zeros around ``array``: ``pad_width`` is ((before, after), ...) per axis, as NumPy's."""
        if mode != "constant":
            raise NotImplementedError(f"pad(mode={mode!r}): only 'constant' (zeros)")
        widths = [tuple(w) for w in np.broadcast_to(np.asarray(pad_width), (array.ndim, 2))]
        padded = self.zeros(tuple(s + a + b for s, (a, b) in zip(array.shape, widths)),
                            dtype=array.dtype)
        padded[tuple(slice(a, a + s) for s, (a, _) in zip(array.shape, widths))] = array
        return padded

    # -- views ---------------------------------------------------------------------
    def broadcast_to(self, array, shape) -> TorchArray:
        return TorchArray(torch.broadcast_to(self.asarray(array).tensor, tuple(shape)))

    def expand_dims(self, array, axis: int) -> TorchArray:
        return TorchArray(self.asarray(array).tensor.unsqueeze(axis))

    # -- elementwise functions, with NumPy's out= ----------------------------------
    def _elementwise(self, function, inputs, out):
        tensors = [_operand(value) for value in inputs]
        first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
        # a Python number beside a tensor becomes a 0-d tensor
        # of that tensor's dtype: NumPy 2's weak scalars
        tensors = [t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=first.dtype,
                                                                      device=self.device)
                   for t in tensors]
        if out is None:
            return TorchArray(function(*tensors))
        function(*tensors, out=out.tensor)
        return out

    def sqrt(self, x, out=None): return self._elementwise(torch.sqrt, [x], out)
    def exp(self, x, out=None): return self._elementwise(torch.exp, [x], out)
    def log(self, x, out=None): return self._elementwise(torch.log, [x], out)
    def abs(self, x, out=None): return self._elementwise(torch.abs, [x], out)
    def isfinite(self, x): return self._elementwise(torch.isfinite, [x], None)
    def isnan(self, x): return self._elementwise(torch.isnan, [x], None)
    def maximum(self, a, b, out=None): return self._elementwise(torch.maximum, [a, b], out)
    def subtract(self, a, b, out=None): return self._elementwise(torch.sub, [a, b], out)
    def multiply(self, a, b, out=None): return self._elementwise(torch.mul, [a, b], out)
    def greater(self, a, b, out=None): return self._elementwise(torch.gt, [a, b], out)
    def matmul(self, a, b, out=None): return self._elementwise(torch.matmul, [a, b], out)

    def where(self, condition, a, b) -> TorchArray:
        return self._elementwise(torch.where, [condition, a, b], None)

    def clip(self, x, low, high, out=None) -> TorchArray:
        result = TorchArray(torch.clamp(x.tensor, low, high))
        if out is None:
            return result
        out.tensor.copy_(result.tensor)
        return out

    # -- reductions and dtypes -----------------------------------------------------
    def argmax(self, x, axis=None): return x.argmax(axis)

    def result_type(self, *values) -> np.dtype:
        return np.result_type(*(v.dtype if isinstance(v, TorchArray) else v for v in values))
