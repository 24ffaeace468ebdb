"""The compiled backend: fused C++ kernels in ``fastrnn._core``.

Implements the backend contract (``contract.Backend``) by forwarding straight to
the pybind11 bindings (``csrc/python/bind_layers.cpp``, ``bind_cells.cpp``), which check every array
at the boundary and release the GIL while the kernels run. float32 and
float64 arrays are computed in their own dtype; mixed dtypes are an error.

Importing this module raises ImportError when the extension is missing or
was built without the recurrent kernels, so the registry falls back to the
next backend.

Threads: the kernels run on their own pool (``csrc/kernels/threads.cpp``; no
OpenMP runtime) with the count set by ``set_num_threads`` (default:
``FASTRNN_NUM_THREADS`` or the CPUs this process may run on). An idle worker
polls for 100 us after a call before it sleeps, so back-to-back calls find it
awake.
"""

from __future__ import annotations

try:
    from fastrnn import _core
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"fastrnn._core is not available: {exc}") from exc

_REQUIRED = ("layer_forward", "layer_backward", "cell_forward", "cell_backward",
             "set_num_threads", "get_num_threads")
_missing = [name for name in _REQUIRED if not hasattr(_core, name)]
if _missing:
    raise ImportError(f"fastrnn._core lacks the recurrent kernels ({', '.join(_missing)}); rebuild the extension")

from fastrnn._validate import thread_count  # noqa: E402

from .contract import KINDS  # noqa: E402 - after the check that the extension has the kernels

NAME = "cpp"
#: The kernels' own GEMM on their own pool (SciPy's BLAS only after the developer switch
#: ``fastrnn._core.set_gemm("scipy")``).
PRODUCTS_IN_BLAS = False

#: layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep, out=None, peep=None,
#: hmask=None, w_hr=None) -> (out, h_n, c_n, ws)
layer_forward = _core.layer_forward
#: layer_backward(ws, grad_out, grad_h_n, grad_c_n, acc=None) -> dict(x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep,
#: w_hr)
layer_backward = _core.layer_backward
#: cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep, peep=None, hmask=None) -> (h_new, c_new, ws)
cell_forward = _core.cell_forward
#: cell_backward(ws, grad_h, grad_c) -> dict(x, h, c, w_ih, w_hh, b_ih, b_hh, peep)
cell_backward = _core.cell_backward


def set_num_threads(n: int) -> None:
    """Number of threads the C++ kernels use (global); an integer of any kind, at most 4096."""
    _core.set_num_threads(thread_count(n))


def get_num_threads() -> int:
    """Number of threads the C++ kernels use."""
    return _core.get_num_threads()


def _check_cache_env() -> None:
    """A FASTRNN_CACHE_MB the kernels cannot use (they then keep the 1 GiB default) warns once."""
    import os
    import warnings

    env = os.environ.get("FASTRNN_CACHE_MB", "").strip()
    if env:
        try:
            ok = 0 <= int(env) <= 2**30
        except ValueError:
            ok = False
        if not ok:
            warnings.warn(f"fastrnn: ignoring FASTRNN_CACHE_MB={env!r} (expected an integer number of MiB >= 0); "
                          f"the block cache keeps its default limit ({_core.get_cache_limit() >> 20} MiB)",
                          RuntimeWarning, stacklevel=2)


_check_cache_env()

#: set_cache_limit(nbytes): freed blocks of >= 1 MB (outputs, workspaces) kept
#: for reuse by the next call, at most this many bytes (default 1 GiB, or the
#: environment variable FASTRNN_CACHE_MB at start-up); 0 turns it off.
set_cache_limit = _core.set_cache_limit
get_cache_limit = _core.get_cache_limit
#: cached_bytes(): bytes held right now; release_cache(): give them all back.
cached_bytes = _core.cached_bytes
release_cache = _core.release_cache
