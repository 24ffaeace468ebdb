"""Shared fixtures: every backend-dependent test runs on every available backend."""

from __future__ import annotations

import os

import numpy as np
import pytest

import importlib

import fastrnn

# Subprocesses that tests start (python -c / -m) must import the installed
# package, not the source tree in the current directory (Python >= 3.11).
os.environ.setdefault("PYTHONSAFEPATH", "1")

BACKENDS = fastrnn.available_backends()
# FASTRNN_TEST_BACKENDS=cpp,numpy restricts the backend-parametrized tests (e.g. the sanitizer job).
if os.environ.get("FASTRNN_TEST_BACKENDS"):
    _wanted = [b.strip() for b in os.environ["FASTRNN_TEST_BACKENDS"].split(",") if b.strip()]
    BACKENDS = [b for b in _wanted if b in BACKENDS]
    if "numpy" in _wanted and "numpy" not in BACKENDS:
        BACKENDS.append("numpy")
DTYPES = [np.float64, np.float32]


def contract_modules():
    """The modules that implement the backend contract under test: :data:`BACKENDS`, and ``capi``
    (the C ABI through ``fastrnn.capi``) where the compiled extension is among them and has it."""
    names = list(BACKENDS)
    if "cpp" in names:
        try:
            importlib.import_module("fastrnn.capi")
            names.append("capi")
        except ImportError:  # the extension without its C header
            pass
    return names


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Name of one available backend."""
    return request.param


@pytest.fixture(params=contract_modules())
def contract_module(request):
    """Name of one module that implements the backend contract (a backend, or ``capi``)."""
    return request.param


@pytest.fixture(params=DTYPES, ids=["f64", "f32"])
def dtype(request):
    return np.dtype(request.param)


def torch_or_skip():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")
