"""Tensor and reverse-mode automatic differentiation.

A :class:`Tensor` wraps an array (``.data``, NumPy or CuPy) and remembers the
:class:`Function` that produced it (``.creator``). Running a model therefore
builds a graph that points from each result back to its inputs.

``loss.backward()`` applies the chain rule along that graph in reverse. For a
function ``y = f(x1, x2, ...)`` that is part of a scalar loss L, the gradient
of L with respect to each input is

    dL/dxi = (dL/dy) * (dy/dxi)

and each Function's ``backward`` computes exactly this product (the
"vector-Jacobian product") from ``gy = dL/dy``, without ever forming the
Jacobian dy/dxi. Because a value can be used by several functions, its
gradient is the *sum* of what each user sends back, so every function must run
only after all of its users have: a topological order of the graph gives that.

Notation: x, y are arrays; gx, gy the gradients dL/dx and dL/dy.
"""
from __future__ import annotations

import weakref
from typing import Sequence

import numpy as np

from .backends import get_array_module, is_device_array, to_cpu_array
from .modes import modes


class Tensor:
    """An array plus what autograd needs: ``grad``, ``requires_grad`` and ``creator``.

    Args:
        data: a NumPy or CuPy array, or anything ``np.asarray`` accepts
            (Python floats become float32, the framework's default).
        requires_grad: whether ``backward()`` should fill ``.grad`` for this
            tensor. Parameters set it; inputs usually do not.
    """

    __array_priority__ = 1000  # so that `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        # a CuPy, dpnp or torch array stays where it is (each
        # refuses np.asarray); anything else becomes NumPy's
        if not isinstance(data, np.ndarray) and not is_device_array(data):
            original = data
            data = np.asarray(data)
            if data.dtype == np.float64:
                data = data.astype(np.float32)  # Python floats -> the default float32
            if data.dtype.kind not in "biufc":  # a string, None, a list of objects...
                raise TypeError("Tensor: numbers expected (an array, a list of numbers, a "
                                f"number), got {type(original).__name__} {original!r:.60}")
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.creator: Function | None = None
        # how many times an optimizer has changed this tensor in place (see backward)
        self.version = 0

    # -- array-like properties -------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU when needed)."""
        return to_cpu_array(self.data)

    def item(self) -> float:
        return float(self.data.reshape(-1)[0]) if self.size == 1 else float(self.data)

    def detach(self) -> "Tensor":
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    # -- backward --------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Fill ``.grad`` of every tensor with ``requires_grad`` that this one depends on.

        Args:
            grad: dL/dself; defaults to 1 for a scalar (the usual ``loss.backward()``).

        Gradients *accumulate* into ``.grad`` (call ``optimizer.zero_grad()``
        between steps). Gradients of intermediate results live in a dictionary
        only while this runs, so they take no memory afterwards.
        """
        if self.creator is None and not self.requires_grad:
            # Nothing to differentiate: doing nothing here
            # would let a training loop "train" for hours
            raise RuntimeError("backward(): this tensor has no graph, so no gradient can flow "
                               "from it. It was computed under tf.no_grad(), or from tensors none "
                               "of which has requires_grad=True")
        xp = get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ValueError("backward() without a gradient needs a "
                                 f"scalar, got shape {self.shape}")
            grad = xp.ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        if tuple(grad.shape) != tuple(self.shape):
            raise ValueError(f"backward(): gradient shape {tuple(grad.shape)} does not match "
                             f"tensor shape {self.shape}")
        if grad.dtype != self.dtype:
            raise TypeError(f"backward(): a {grad.dtype} gradient for a {self.dtype} "
                            "tensor; pass one of its dtype")

        grads = {id(self): grad}  # id(tensor) -> dL/dtensor, summed over its users
        for function in _topological_order(self):
            gy = grads.pop(id(function.output()), None)
            if gy is None:  # this output does not influence the loss
                continue
            changed = [t for t, version in zip(function.inputs, function.versions)
                       if t.version != version]
            if changed:
                raise RuntimeError(f"backward(): a parameter of shape {changed[0].shape} was "
                                   "changed by the optimizer after this graph was computed, so "
                                   "its gradient would be wrong; compute the loss again "
                                   "(forward) after optimizer.step()")
            needs = [t.requires_grad for t in function.inputs]
            gxs = function.backward(gy, needs)
            for tensor, gx in zip(function.inputs, gxs):
                if gx is None or not tensor.requires_grad:
                    continue
                if tensor.creator is None:  # a leaf (a parameter): keep its gradient
                    tensor.grad = gx if tensor.grad is None else tensor.grad + gx
                else:
                    key = id(tensor)
                    grads[key] = gx if key not in grads else grads[key] + gx
        if self.creator is None and self.requires_grad:
            self.grad = grad if self.grad is None else self.grad + grad

    # -- operators (defined in functional.basic, attached at import) -------------
    # __add__, __mul__, __matmul__, reshape, sum, mean, T, ... see tinyflux/functional/basic.py


def as_tensor(x) -> Tensor:
    """``x`` itself if it is a Tensor, else a new Tensor around it (an array, a list, a number)."""
    return x if isinstance(x, Tensor) else Tensor(x)


def _topological_order(root: Tensor) -> list["Function"]:
    """Functions that led to ``root``, each listed before the functions that produced its inputs.

    An iterative depth-first search (not recursion, so a graph thousands of ops
    deep does not hit Python's recursion limit): a function is appended after
    all functions that use its output, then the list is reversed.
    """
    order: list[Function] = []
    visited: set[int] = set()
    if root.creator is None:
        return order
    stack = [(root.creator, False)]
    while stack:
        function, inputs_done = stack.pop()
        if inputs_done:
            order.append(function)
            continue
        if id(function) in visited:
            continue
        visited.add(id(function))
        stack.append((function, True))  # revisit after its inputs' creators
        for tensor in function.inputs:
            if tensor.creator is not None and id(tensor.creator) not in visited:
                stack.append((tensor.creator, False))
    order.reverse()  # now root's creator comes first, inputs' creators after their users
    return order


class Function:
    """One differentiable operation: ``forward`` on raw arrays, ``backward`` on gradients.

    Subclasses implement

    * ``forward(*arrays) -> array``, saving on ``self`` only what backward needs;
    * ``backward(gy, needs) -> tuple`` of one gradient per input, where
      ``needs[i]`` says whether input i wants one (return None otherwise: it
      saves work, e.g. no gradient for the images in the first convolution).

    Call an instance through :meth:`apply`, which wraps inputs and output in Tensors
    and links the graph when gradients are enabled.
    """

    inputs: Sequence[Tensor]
    output: "weakref.ref[Tensor]"  # weak: output -> creator -> output would be a reference cycle

    def apply(self, *inputs) -> Tensor:
        tensors = [as_tensor(x) for x in inputs]
        y = self.forward(*[t.data for t in tensors])
        if isinstance(y, np.generic):  # NumPy reductions return scalars; keep every result an array
            y = np.asarray(y)
        out = Tensor(y)
        if modes.grad and any(t.requires_grad for t in tensors):
            out.requires_grad = True
            out.creator = self
            self.inputs = tensors
            # checked by backward: stale if an optimizer stepped
            self.versions = [t.version for t in tensors]
            self.output = weakref.ref(out)
        return out

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy, needs):
        raise NotImplementedError
