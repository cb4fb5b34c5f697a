"""Shared fixtures: every backend test runs once per available array library.

``xp`` is numpy, or cupy where CuPy and a GPU are present; on a machine
without them the cupy case is skipped with a reason, never failed.
"""
import numpy as np
import pytest

from tinyflux import backend


def _backends():
    params = [pytest.param("numpy", id="numpy")]
    skip = pytest.mark.skipif(not backend.cupy_available(), reason="CuPy or a CUDA GPU is not available")
    params.append(pytest.param("cupy", id="cupy", marks=skip))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    return backend.array_module(request.param)


def to_numpy(array):
    return backend.to_cpu_array(array)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
