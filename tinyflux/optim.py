"""Optimizers: they read each parameter's ``.grad`` and update its ``.data`` in place.

SGD: p <- p - lr * g (with momentum mu: u <- mu * u + g; p <- p - lr * u).

Adam keeps two running averages per parameter, of the gradient and of its
square, and divides one by the square root of the other, so the scale of
the gradient cancels out: a weight moves by at most about lr per step (when
its gradient keeps one sign), and by less when noisy gradients cancel in m:

    m <- b1 * m + (1 - b1) * g           v <- b2 * v + (1 - b2) * g**2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1**t),  v_hat = v / (1 - b2**t)

m and v start at zero, so early averages are too small; dividing by
(1 - b**t) after t steps corrects that bias (Kingma & Ba, 2015; the same
update as PyTorch's and Flux's Adam). ``opt.lr`` may be changed between steps.
"""
from __future__ import annotations

from typing import NamedTuple

from . import checks
from .backends import backend_name, get_array_module, has_float64, ops_for
from .tensor import Tensor


class Optimizer:
    """Base class: the parameter list, the learning rate ``lr`` and the step count ``t``.

    ``lr`` is checked whenever it is set (a schedule's ``opt.lr /= 10`` too):
    a negative, infinite or NaN rate would ruin every weight at the next step.
    """

    def __init__(self, params, lr: float):
        if isinstance(params, Tensor) or not hasattr(params, "__iter__"):
            raise TypeError(f"{type(self).__name__}: params must be a list of parameter Tensors, "
                            f"such as model.parameters(); got {params!r}")
        self.params: list[Tensor] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        seen = {}  # id(parameter) -> its first position
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a "
                                f"{type(p).__name__}, expected a Tensor")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: parameter {i} is parameter "
                                 f"{seen[id(p)]} again; pass each parameter once")
            seen[id(p)] = i
        self.lr = lr
        self.t = 0  # number of steps taken

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = checks.real(value, f"{type(self).__name__} lr", minimum=0.0)

    def zero_grad(self) -> None:
        """Forget the gradients, ready for the next backward pass."""
        for p in self.params:
            p.grad = None

    def check_gradients(self) -> None:
        """Refuse a step without any gradient (it would count a step and
        change nothing), and gradients that do not fit their parameter; then
        mark every parameter about to change (see ``Tensor.backward``)."""
        name = type(self).__name__
        if all(p.grad is None for p in self.params):
            raise RuntimeError(f"{name}.step(): no parameter has a gradient; call loss.backward() "
                               "first (on a loss computed outside tf.no_grad())")
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if tuple(p.grad.shape) != tuple(p.data.shape) or p.grad.dtype != p.data.dtype:
                raise ValueError(f"{name}.step(): parameter {i} is "
                                 f"{p.data.dtype}{tuple(p.data.shape)} but its gradient is "
                                 f"{p.grad.dtype}{tuple(p.grad.shape)}; a gradient must have its "
                                 "parameter's shape and dtype")
            p.version += 1

    def step(self) -> None:
        self.check_gradients()
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(i, p)

    def update(self, i: int, p: Tensor) -> None:
        raise NotImplementedError

    # -- checkpointing: arrays and plain numbers only ---------------------------
    def state_arrays(self) -> dict[str, list]:
        """Per-parameter state arrays by kind, e.g. {"m": [...], "v": [...]}."""
        return {}

    def hyperparameters(self) -> dict:
        """Everything besides the arrays that a resumed
        run needs, as plain values (for ``tf.save``)."""
        return {"type": type(self).__name__, "lr": self.lr, "t": self.t}

    def parse_hyperparameters(self, stored: dict) -> tuple[dict, list[str]]:
        """Check hyperparameters read from a checkpoint;
        return the usable ones and a list of problems.

        Nothing is changed here, so that ``tf.load`` can check the whole file
        before it touches the model or the optimizer.
        """
        parsed, problems = {}, []
        for key in self.hyperparameters():
            if key == "type":
                continue
            if key not in stored:
                problems.append(f"missing optimizer attribute {key!r}")
                continue
            try:
                parsed[key] = self._parse_hyperparameter(key, stored[key])
            except (TypeError, ValueError) as error:
                problems.append(f"bad optimizer attribute {key!r}: {error}")
        return parsed, problems

    def _parse_hyperparameter(self, key: str, value):
        where = f"{type(self).__name__} {key}"
        if key == "t":
            return checks.integer(value, where, minimum=0)
        return checks.real(value, where, minimum=0.0)

    def load_state(self, hyper: dict, arrays: dict[str, list]) -> None:
        """Take checked hyperparameters (from :meth:`parse_hyperparameters`) and state arrays."""
        self.lr, self.t = hyper["lr"], hyper["t"]
        for kind, values in arrays.items():
            target = getattr(self, kind)
            for i, value in enumerate(values):
                # copied into the existing array: Adam's are views of a flat buffer
                if value is not None:
                    target[i][...] = get_array_module(target[i]).asarray(value)


class SGD(Optimizer):
    """SGD(params, lr=0.01, momentum=0.0)"""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = checks.real(momentum, "SGD momentum", minimum=0.0, below=1.0)
        zeros = [get_array_module(p.data).zeros_like(p.data) for p in self.params]
        self.velocity = zeros if momentum else []

    def update(self, i, p):
        g = p.grad
        if self.momentum:
            u = self.velocity[i]
            u *= self.momentum
            u += g
            g = u
        p.data -= self.lr * g

    def state_arrays(self):
        return {"velocity": self.velocity} if self.momentum else {}

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum}

    def _parse_hyperparameter(self, key, value):
        if key == "momentum":
            value = checks.real(value, "SGD momentum", minimum=0.0, below=1.0)
            if (value == 0) != (self.momentum == 0):  # the velocity arrays exist only with momentum
                raise ValueError(f"the file has momentum {value:g}, this SGD {self.momentum:g}; "
                                 "build the optimizer with the saved momentum")
            return value
        return super()._parse_hyperparameter(key, value)

    def load_state(self, hyper, arrays):
        super().load_state(hyper, arrays)
        self.momentum = hyper["momentum"]


class ParameterBuffer:
    """Parameters of one dtype on one device, stored end to end in a single flat array.

    Each parameter's ``.data`` becomes a reshaped slice (a view) of ``data``, so
    the model reads and writes the buffer without knowing it. An update that is
    element-wise, such as Adam's, can then treat all the parameters as one
    array: one pass (one launch on a GPU) instead of one per parameter. The
    gradients are gathered into ``grad``, laid out the same way.

    Anything that later *replaces* a parameter's array (``tf.load``, a
    gradient check, ``tf.gpu``) unhooks it from the buffer; ``attach()`` notices
    and copies the new values back in.
    """

    def __init__(self, params: list):
        first = params[0].data
        xp = get_array_module(first)
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.shapes = [tuple(p.data.shape) for p in params]
        self.data = xp.empty(sum(self.sizes), dtype=first.dtype)  # (total,)
        self.grad = xp.empty_like(self.data)  # (total,)
        self.grad_views = self.split(self.grad)
        self.views = [None] * len(params)
        self.attach()

    def split(self, flat) -> list:
        """The per-parameter views of a flat array laid
        out like ``data``: flat (total,) -> shapes[i]."""
        views, start = [], 0
        for size, shape in zip(self.sizes, self.shapes):
            views.append(flat[start:start + size].reshape(shape))  # (size,) -> shape, still a view
            start += size
        return views

    def attach(self) -> None:
        """Make every parameter's ``.data`` its view of the
        buffer again, copying in values that were replaced."""
        if all(p.data is view for p, view in zip(self.params, self.views)):
            return  # the usual case: nothing replaced since the last step
        views = self.split(self.data)
        for i, (p, view) in enumerate(zip(self.params, views)):
            if p.data is self.views[i]:
                continue
            if tuple(p.data.shape) != view.shape or p.data.dtype != view.dtype or \
                    backend_name(p.data) != backend_name(view):
                raise ValueError(f"parameter {i} is now {backend_name(p.data)} "
                                 f"{p.data.dtype}{tuple(p.data.shape)}, but the optimizer was "
                                 f"built for {backend_name(view)} {view.dtype}{view.shape}: "
                                 "create the optimizer after moving or changing the model")
            view[...] = p.data
            p.data = view
        self.views = views

    def gather_grads(self):
        """Every gradient copied into ``grad`` (total,); None if a parameter has none."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            return None
        for view, g in zip(self.grad_views, grads):
            view[...] = g  # one copy per parameter, each a plain kernel a CUDA graph can record
        return self.grad


# The order of Adam's numbers in each group's ``hyper`` array. The backends read them by position
# (NumpyOps.adam_update and count_step, kernels.cu's adam and count_step), so t stays last.
ADAM_NUMBERS = ("lr", "beta1", "beta2", "eps", "t")


class AdamGroup(NamedTuple):
    """Adam's state for the parameters of one dtype
    and device, each part a flat array on that device."""

    positions: list  # where these parameters stand in ``Adam.params``
    parameters: ParameterBuffer  # their values (and gradients), end to end
    m: object  # running mean of the gradients, laid out like parameters.data
    v: object  # running mean of the squared gradients, likewise
    # ADAM_NUMBERS: (lr, beta1, beta2, eps, t), float64 where the device has it; the update reads it
    hyper: object


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    The parameters are moved into flat buffers, one :class:`AdamGroup` per
    dtype and device (normally just one), with m and v laid out the same way,
    so one step is a single update of a few flat arrays. When some
    parameters have no gradient this step, only the others are updated, one
    by one, through their views.

    The hyperparameters and the step count t live in a small array beside
    the buffers, ``hyper`` = (lr, beta1, beta2, eps, t), on the same device:
    the update reads them from there, in NumPy as in the CUDA kernel, and a
    captured CUDA graph (``tf.capture``), which replays the same update, sees
    a new ``opt.lr`` or a loaded t at its next replay. ``opt.lr`` and
    ``opt.t`` read and write that array.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups: list[AdamGroup] = []  # filled below; lr and t are stored in them
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam betas: expected two numbers (beta1, beta2), got {betas!r}")
        betas = (checks.real(betas[0], "Adam beta1", minimum=0.0, below=1.0),
                 checks.real(betas[1], "Adam beta2", minimum=0.0, below=1.0))
        eps = checks.real(eps, "Adam eps", minimum=0.0)
        positions_by_kind: dict = {}  # (backend, dtype) -> positions in self.params
        for i, p in enumerate(self.params):
            positions_by_kind.setdefault((backend_name(p.data), p.data.dtype.str), []).append(i)
        self.m, self.v = [None] * len(self.params), [None] * len(self.params)  # per-parameter views
        for positions in positions_by_kind.values():
            buffer = ParameterBuffer([self.params[i] for i in positions])
            xp = get_array_module(buffer.data)
            flat_m, flat_v = xp.zeros_like(buffer.data), xp.zeros_like(buffer.data)
            for i, m, v in zip(positions, buffer.split(flat_m), buffer.split(flat_v)):
                self.m[i], self.v[i] = m, v
            # float64 where the device has it (NumPy rounds 1 - beta2 in float64 too); else the
            # parameters' dtype, in which t counts exactly up to 2**24 steps
            hyper_dtype = xp.float64 if has_float64(buffer.data) else buffer.data.dtype
            numbers = {"lr": self.lr, "beta1": betas[0], "beta2": betas[1], "eps": eps, "t": 0}
            hyper = xp.array([numbers[name] for name in ADAM_NUMBERS], dtype=hyper_dtype)
            self.groups.append(AdamGroup(positions, buffer, flat_m, flat_v, hyper))
        self._betas, self._eps = betas, eps

    # lr, t, betas and eps: the host keeps a copy of each
    # for reading; writing one also writes every hyper
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = checks.real(value, "Adam lr", minimum=0.0)
        self._write_hyper("lr", self._lr)

    @property
    def t(self) -> int:
        """Steps taken: read from the group's hyper array (on a GPU that waits for the GPU)."""
        return int(self.groups[0].hyper[ADAM_NUMBERS.index("t")]) if self.groups else 0

    @t.setter
    def t(self, value) -> None:
        self._write_hyper("t", checks.integer(value, "Adam t", minimum=0))

    @property
    def betas(self) -> tuple:
        return self._betas

    @property
    def eps(self) -> float:
        return self._eps

    def _write_hyper(self, name: str, value) -> None:
        """Write one of ADAM_NUMBERS into every group's hyper array."""
        for group in self.groups:
            group.hyper[ADAM_NUMBERS.index(name)] = value

    def step(self) -> None:
        """t <- t + 1, then one update of every parameter that has a gradient."""
        # first: a replaced parameter is the error to report, not its old gradient
        self.attach_parameters()
        self.check_gradients()
        self._update()

    def _update(self) -> None:
        """The update itself, once the parameters are attached and the gradients checked."""
        for positions, buffer, flat_m, flat_v, hyper in self.groups:
            ops = ops_for(buffer.data)
            ops.count_step(hyper)
            flat_grad = buffer.gather_grads()
            if flat_grad is not None:  # the usual case: every parameter in one update
                ops.adam_update(buffer.data, flat_grad, flat_m, flat_v, hyper)
                continue
            for i in positions:
                p = self.params[i]
                if p.grad is not None:
                    ops.adam_update(p.data, p.grad, self.m[i], self.v[i], hyper)

    def attach_parameters(self) -> None:
        """Put back into the flat buffers any parameter
        whose array was replaced since the last step."""
        for group in self.groups:
            group.parameters.attach()

    def flat_state(self) -> list:
        """[parameters, m, v, hyper] of the single group:
        the arrays a captured step reads and writes."""
        if len(self.groups) != 1:
            raise ValueError("Adam.flat_state: all parameters must share one dtype and device, got "
                             + ", ".join(f"{backend_name(g.parameters.data)} "
                                         f"{g.parameters.data.dtype}"
                                         for g in self.groups))
        group = self.groups[0]
        return [group.parameters.data, group.m, group.v, group.hyper]

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta1": self.betas[0], "beta2": self.betas[1],
                "eps": self.eps}

    def _parse_hyperparameter(self, key, value):
        if key in ("beta1", "beta2"):
            return checks.real(value, f"Adam {key}", minimum=0.0, below=1.0)
        return super()._parse_hyperparameter(key, value)

    def load_state(self, hyper, arrays):
        super().load_state(hyper, arrays)
        self._betas, self._eps = (hyper["beta1"], hyper["beta2"]), hyper["eps"]
        for name in ("beta1", "beta2", "eps"):
            self._write_hyper(name, hyper[name])

    def state_arrays(self):
        return {"m": self.m, "v": self.v}


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0.01): Adam with decoupled weight decay.

    Before each Adam step, every parameter that has a gradient shrinks towards 0:
    p <- p - lr * weight_decay * p (Loshchilov & Hutter, 2019; PyTorch's and Flux's
    AdamW). Adding weight_decay * p to the gradient instead would pass the decay
    through Adam's division by sqrt(v), which weakens it exactly for the weights
    with large gradients; decoupled, every weight decays at the same rate. It keeps
    weights small, which helps a network generalise from little data.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps)
        self.weight_decay = checks.real(weight_decay, "AdamW weight_decay", minimum=0.0)

    def step(self) -> None:
        self.attach_parameters()
        self.check_gradients()
        shrink = 1 - self.lr * self.weight_decay
        for group in self.groups:
            if all(self.params[i].grad is not None for i in group.positions):
                group.parameters.data *= shrink  # the usual case: one pass over the flat buffer
                continue
            for i in group.positions:
                if self.params[i].grad is not None:
                    # in place: the parameter's view of the flat buffer
                    self.params[i].data *= shrink
        self._update()

    def hyperparameters(self):
        return {**super().hyperparameters(), "weight_decay": self.weight_decay}

    def _parse_hyperparameter(self, key, value):
        if key == "weight_decay":
            return checks.real(value, "AdamW weight_decay", minimum=0.0)
        return super()._parse_hyperparameter(key, value)

    def load_state(self, hyper, arrays):
        super().load_state(hyper, arrays)
        self.weight_decay = hyper["weight_decay"]
