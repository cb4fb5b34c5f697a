"""NumPy's dtypes and PyTorch's side by side, and the float32-only rule of ``torch_arrays.py``.

A device without float64 (Apple's MPS) refuses every float64 array where it would be made, with a
message that says so (:class:`Float64Error`); ``TorchNumpy(..., float64=False)`` does the same on
any device, which is how the CPU tests check that tinyflux runs within float32 alone.
"""
from __future__ import annotations

import numpy as np
import torch

# NumPy's dtypes and the torch dtypes that hold the same numbers
TORCH_DTYPE = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
               np.dtype(np.float64): torch.float64, np.dtype(np.int8): torch.int8,
               np.dtype(np.int16): torch.int16, np.dtype(np.int32): torch.int32,
               np.dtype(np.int64): torch.int64, np.dtype(np.uint8): torch.uint8,
               np.dtype(np.bool_): torch.bool}
NUMPY_DTYPE = {torch_dtype: numpy_dtype for numpy_dtype, torch_dtype in TORCH_DTYPE.items()}

# devices whose kernels have no float64: PyTorch refuses a float64 tensor there
NO_FLOAT64_DEVICES = ("mps",)
# =1: refuse float64 on every device, as MPS does
FLOAT32_ONLY_VARIABLE = "TINYFLUX_TORCH_FLOAT32_ONLY"


class Float64Error(TypeError):
    """A float64 array was asked for on a device (or in a mode) that computes in float32 only."""


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype for a NumPy dtype, a NumPy type
    (np.float32), a name ("float32") or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return TORCH_DTYPE[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise TypeError(f"dtype {dtype!r} has no torch counterpart here: expected one of "
                        f"{', '.join(str(d) for d in TORCH_DTYPE)}") from None


def no_float64_message(device) -> str:
    """Why a float64 array is refused on ``device``, and what to do instead."""
    reason = (f"{device.type.upper()} has no float64" if device.type in NO_FLOAT64_DEVICES
              else f"{FLOAT32_ONLY_VARIABLE}=1 refuses float64 as MPS does")
    return (f"a float64 array on torch:{device}: {reason}. Keep the data and the model in float32 "
            "(tf.to_float_images, Tensor(x.astype(np.float32)))")
