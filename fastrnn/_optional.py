"""Optional dependencies: imported where they are used, with one message when missing.

The core install is NumPy plus the compiled extension. Everything else comes
with an extra named for what it serves (``pyproject.toml``)::

    numba   the Numba backend (numba, SciPy's BLAS for its products, threadpoolctl)
    capi    fastrnn.capi, the C ABI through cffi
    train   fastrnn.optim.LBFGS (SciPy), fastrnn.train.fit's progress bar (tqdm) and BLAS limit (threadpoolctl)
    sine    the ``fastrnn sine`` command (train + matplotlib)
    bench   the benchmark suite and ``fastrnn bench-report``'s plot
    torch   fastrnn.torch and the PyTorch parity tests
    onnx    ONNX import/export and ONNX Runtime

:func:`require` imports a module or raises :class:`MissingExtraError`, whose
message is one line naming the ``pip install "fastrnn[extra]"`` that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require", "missing_message"]


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency of the feature in use is not installed (a ModuleNotFoundError)."""


def missing_message(module: str, *, extra: str, feature: str) -> str:
    """The one-line message for ``feature`` lacking ``module`` (installed with ``fastrnn[extra]``)."""
    package = module.split(".")[0]
    return f'{feature} needs {package}, which is not installed: pip install "fastrnn[{extra}]"'


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``; raise :class:`MissingExtraError` if its package is not installed.

    ``extra`` is the name (or comma-separated names) of the extra that installs
    it. A package that is installed but fails to import (a broken or
    incompatible install) raises its own ImportError unchanged, with its own
    reason.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and module != missing and not module.startswith(missing + "."):
            raise  # the package is there; something it imports is not: its own error says what
        raise MissingExtraError(missing_message(module, extra=extra, feature=feature), name=exc.name) from None
