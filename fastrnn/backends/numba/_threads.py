"""Threads: fastrnn's thread count, and OpenBLAS held at one thread while a time loop runs.

The kernels are serial (one step is too small to share with a barrier per
step) and Numba's threading layer is never started. The large products
before and after the time loops run in the BLAS of NumPy/SciPy with its own
threads (``OPENBLAS_NUM_THREADS`` / threadpoolctl).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ..._validate import thread_count


def set_num_threads(n: int) -> None:
    """Accept fastrnn's thread count; nothing in this backend runs Numba threads.

    The kernels here are serial per step (the per-step work is too small to
    share across threads with a barrier each step) and have no parallel
    regions; the big products run in the BLAS of NumPy/SciPy, whose thread
    count this does not change. Numba's threading layer is deliberately not
    started: ``numba.set_num_threads`` launches its OpenMP pool, and an idle
    pool of one OpenMP runtime slows another's (PyTorch's) in the same
    process several times over.
    """
    thread_count(n)


class _SerialBLAS:
    """OpenBLAS single-threaded while a jitted time loop runs (``with serial_blas(steps):``).

    The loops call BLAS once per step on a small product (``np.dot`` -> SciPy's
    OpenBLAS) and alternate it with jitted pointwise code; OpenBLAS's worker
    threads then cost more than they give. The large GEMMs outside the loops
    keep the user's BLAS threads: the previous counts are restored when the
    last concurrent loop ends. Single steps (cells) are left alone. Needs
    threadpoolctl; without it BLAS is left as it is.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._libs: list[Any] | None = None
        self._depth = 0
        self._saved: list[int] = []

    def _find(self) -> list[Any]:
        try:
            import scipy.linalg.cython_blas  # noqa: F401 - the BLAS numba's np.dot calls; load it first
            from threadpoolctl import ThreadpoolController

            return [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"]
        except Exception:  # pragma: no cover - threadpoolctl missing or unable to read a library
            return []

    @contextlib.contextmanager
    def limit(self, steps: int) -> Iterator[None]:
        if steps <= 1:
            yield
            return
        with self._lock:
            if self._libs is None:
                self._libs = self._find()
            if self._depth == 0:
                self._saved = [lib.get_num_threads() for lib in self._libs]
                for lib, n in zip(self._libs, self._saved):
                    if n != 1:
                        lib.set_num_threads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for lib, n in zip(self._libs, self._saved):
                        if n != 1:
                            lib.set_num_threads(n)


serial_blas = _SerialBLAS().limit
