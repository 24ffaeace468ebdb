"""The C ABI of fastrnn's kernels, bound with cffi (ABI mode over the built module).

The header ``fastrnn/include/fastrnn.h`` (installed with the package) is the
single source of the declarations: its block between ``FASTRNN_CDEF_BEGIN``
and ``FASTRNN_CDEF_END`` is handed to ``ffi.cdef``, and the functions are
resolved in the compiled module ``fastrnn._core`` that exports them.

Two ways to use it:

- from Python, the helpers below take NumPy arrays, check them, call the C
  function and raise on an error status (they follow the backend contract of
  ``fastrnn/backends/CONTRACT.md``);
- from Numba nopython code, call ``lib.fastrnn_cell_forward_f64`` (etc.)
  directly with ``ffi.from_buffer(array)`` pointers: no Python in the loop.
  ``fastrnn.capi_njit`` is that pattern, an LSTM over a sequence, written out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._optional import require

FFI = require("cffi", extra="capi", feature="fastrnn.capi (the C ABI through cffi)").FFI

from .backends.contract import KINDS, has_cell_state

from .backends._args import check_forward, check_gradients
from .backends._rows import check_out, check_rows_arg

__all__ = [
    "ffi", "lib", "header_path", "abi_version", "status_message", "FastrnnCError",
    "RNN_TANH", "RNN_RELU", "LSTM", "GRU", "GRU_ORIG", "LSTM_CIFG", "KIND_CODES",
    "layer_forward", "layer_backward", "cell_forward", "cell_backward",
]


def _library_path() -> str:
    spec = importlib.util.find_spec("fastrnn._core")
    if spec is None or not spec.origin:
        raise ImportError("fastrnn._core (the compiled extension) is not installed; the C ABI lives in it")
    return spec.origin


def header_path() -> Path:
    """The installed C header (``include/fastrnn.h`` beside the compiled module)."""
    return Path(_library_path()).parent / "include" / "fastrnn.h"


def _cdef_text(path: Path) -> str:
    text = path.read_text()
    try:
        body = text.split("FASTRNN_CDEF_BEGIN", 1)[1].split("/* FASTRNN_CDEF_END", 1)[0]
    except IndexError:
        raise ImportError(f"{path} has no FASTRNN_CDEF_BEGIN/END block") from None
    body = body.split("*/", 1)[1]  # the rest of the marker's comment
    return body.replace("FASTRNN_API ", "")


if not header_path().exists():
    raise ImportError(f"the C header {header_path()} is not installed (package built without the extension?)")

ffi = FFI()
ffi.cdef(_cdef_text(header_path()))
lib = ffi.dlopen(_library_path())  # the module Python already loaded: same kernels, same state


def _resolve_blas() -> None:
    """Resolve SciPy's BLAS as the pybind11 path does, so both paths share one GEMM setting
    (the kernels' own GEMM by default; ``fastrnn._core.set_gemm("scipy")`` switches both)."""
    import fastrnn._core as core

    if hasattr(core, "blas_info"):
        core.blas_info()


_resolve_blas()

RNN_TANH, RNN_RELU, LSTM, GRU, GRU_ORIG, LSTM_CIFG = (lib.FASTRNN_RNN_TANH, lib.FASTRNN_RNN_RELU, lib.FASTRNN_LSTM,
                                                      lib.FASTRNN_GRU, lib.FASTRNN_GRU_ORIG, lib.FASTRNN_LSTM_CIFG)
#: kind name of the backend contract -> C enum value
KIND_CODES = {kind: getattr(lib, "FASTRNN_" + kind.upper()) for kind in KINDS}
#: The codes of the kinds with a cell state (the LSTM kinds).
_CELL_STATE_CODES = frozenset(code for kind, code in KIND_CODES.items() if has_cell_state(kind))


class FastrnnCError(ValueError):
    """An error status returned by the C ABI (``status`` holds the code)."""

    def __init__(self, func: str, status: int) -> None:
        self.status = int(status)
        super().__init__(f"{func}: {status_message(status)} (status {status})")


def abi_version() -> int:
    return int(lib.fastrnn_abi_version())


def status_message(status: int) -> str:
    message: str = ffi.string(lib.fastrnn_status_message(int(status))).decode()
    return message


def _raise_on(func: str, status: int) -> None:
    if status == lib.FASTRNN_OK:
        return
    if status == lib.FASTRNN_ERR_NO_MEMORY:
        raise MemoryError(f"{func}: {status_message(status)}")
    raise FastrnnCError(func, status)


# ---------------------------------------------------------------------------
# NumPy helpers: check every array (C cannot), then call.
# ---------------------------------------------------------------------------

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_CTYPE = {np.dtype(np.float32): "float *", np.dtype(np.float64): "double *"}


def _kind_code(kind: Any) -> int:
    try:
        code: int = KIND_CODES[kind]
        return code
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {list(KIND_CODES)}, got {kind!r}") from None


def _ptr(a: NDArray[Any] | None, dtype: np.dtype[Any]) -> Any:
    return ffi.NULL if a is None else ffi.cast(_CTYPE[dtype], a.ctypes.data)


def _gradient_arrays(code: int, x: NDArray[Any], B: int, H: int, bias: bool, h_key: str,
                     c_key: str, peep: NDArray[Any] | None, P: int | None = None) -> dict[str, NDArray[Any] | None]:
    """Fresh output arrays of a backward: dx like ``x``, the state gradients under ``h_key``/``c_key``
    (``c_key`` None unless LSTM), weight gradients, bias gradients (None without bias), the
    peepholes' (None without ``peep``). ``P``: the units of h (an LSTM's projection), else H."""
    dt, I = x.dtype, x.shape[-1]
    G = int(lib.fastrnn_num_gates(code))
    lstm = code in _CELL_STATE_CODES
    P = H if P is None else P
    return {"x": np.empty_like(x), h_key: np.empty((B, P), dt), c_key: np.empty((B, H), dt) if lstm else None,
            "w_ih": np.empty((G * H, I), dt), "w_hh": np.empty((G * H, P), dt),
            "b_ih": np.empty(G * H, dt) if bias else None, "b_hh": np.empty(G * H, dt) if bias else None,
            "peep": None if peep is None else np.empty_like(peep)}


def _lengths_ptr(lengths: NDArray[Any] | None) -> Any:
    return ffi.NULL if lengths is None else ffi.cast("int64_t *", lengths.ctypes.data)


def cell_forward(kind: str, x: NDArray[Any], h: NDArray[Any], c: NDArray[Any] | None, w_ih: NDArray[Any],
                 w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                 keep: bool, peep: NDArray[Any] | None = None, hmask: NDArray[Any] | None = None
                 ) -> tuple[NDArray[Any], NDArray[Any] | None, dict[str, Any] | None]:
    """One step through the C ABI; same arguments and results as the backend contract (with
    ``peep``, ``fastrnn_cell_forward_ex_*``; with ``hmask``, ``fastrnn_cell_forward_masked_*``)."""
    code = _kind_code(kind)
    dt, _, B, I, H = check_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, cell=True, peep=peep, hmask=hmask)
    lstm = code in _CELL_STATE_CODES
    h_new = np.empty((B, H), dt)
    c_new = np.empty((B, H), dt) if lstm else None
    ws = np.empty(int(lib.fastrnn_cell_workspace_size(code, B, H)), dt) if keep else None
    p: Callable[[Any], Any] = lambda a: _ptr(a, dt)  # noqa: E731
    if hmask is not None:
        _raise_on("fastrnn_cell_forward_masked",
                  getattr(lib, f"fastrnn_cell_forward_masked_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c if lstm else None), p(w_ih), p(w_hh), p(b_ih), p(b_hh),
                      p(peep), p(hmask), p(h_new), p(c_new), p(ws)))
    elif peep is None:
        _raise_on("fastrnn_cell_forward",
                  getattr(lib, f"fastrnn_cell_forward_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c if lstm else None), p(w_ih), p(w_hh), p(b_ih), p(b_hh),
                      p(h_new), p(c_new), p(ws)))
    else:
        _raise_on("fastrnn_cell_forward_ex",
                  getattr(lib, f"fastrnn_cell_forward_ex_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c), p(w_ih), p(w_hh), p(b_ih), p(b_hh), p(peep), p(h_new),
                      p(c_new), p(ws)))
    state: dict[str, Any] | None = None
    if keep:
        state = dict(kind=kind, x=x.copy(), h=h.copy(), c=c.copy() if c is not None else None,
                     c_new=c_new.copy() if c_new is not None else None, w_ih=w_ih, w_hh=w_hh, bias=b_ih is not None,
                     ws=ws, peep=peep, hmask=hmask)  # copies of x, h, c (contract.Backend)
    return h_new, c_new, state


def cell_backward(state: dict[str, Any], grad_h: NDArray[Any] | None, grad_c: NDArray[Any] | None) -> dict[str,
                  NDArray[Any] | None]:
    """Gradients of a ``cell_forward(..., keep=True)`` through the C ABI."""
    code, x, h, c = _kind_code(state["kind"]), state["x"], state["h"], state["c"]
    dt = x.dtype
    B, I = x.shape
    H = h.shape[1]
    lstm = code in _CELL_STATE_CODES
    check_gradients(dt, grad_h=(grad_h, (B, H)), grad_c=(grad_c if lstm else None, (B, H)))
    peep, hmask = state["peep"], state["hmask"]
    g = _gradient_arrays(code, x, B, H, state["bias"], "h", "c", peep)
    p: Callable[[Any], Any] = lambda a: _ptr(a, dt)  # noqa: E731
    if hmask is not None:
        _raise_on("fastrnn_cell_backward_masked",
                  getattr(lib, f"fastrnn_cell_backward_masked_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c), p(state["c_new"]), p(state["w_ih"]), p(state["w_hh"]),
                      p(peep), p(hmask), p(state["ws"]), p(grad_h), p(grad_c if lstm else None), p(g["x"]),
                      p(g["h"]), p(g["c"]), p(g["w_ih"]), p(g["w_hh"]), p(g["b_ih"]), p(g["b_hh"]), p(g["peep"])))
    elif peep is None:
        _raise_on("fastrnn_cell_backward",
                  getattr(lib, f"fastrnn_cell_backward_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c), p(state["c_new"]), p(state["w_ih"]), p(state["w_hh"]),
                      p(state["ws"]), p(grad_h), p(grad_c if lstm else None), p(g["x"]), p(g["h"]), p(g["c"]),
                      p(g["w_ih"]), p(g["w_hh"]), p(g["b_ih"]), p(g["b_hh"])))
    else:
        _raise_on("fastrnn_cell_backward_ex",
                  getattr(lib, f"fastrnn_cell_backward_ex_{_SUFFIX[dt]}")(
                      code, B, I, H, p(x), p(h), p(c), p(state["c_new"]), p(state["w_ih"]), p(state["w_hh"]),
                      p(peep), p(state["ws"]), p(grad_h), p(grad_c), p(g["x"]), p(g["h"]), p(g["c"]), p(g["w_ih"]),
                      p(g["w_hh"]), p(g["b_ih"]), p(g["b_hh"]), p(g["peep"])))
    return g


def layer_forward(kind: str, x: NDArray[Any], h0: NDArray[Any], c0: NDArray[Any] | None, w_ih: NDArray[Any],
                  w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                  lengths: NDArray[Any] | None, reverse: bool, keep: bool,
                  out: NDArray[Any] | None = None, peep: NDArray[Any] | None = None,
                  hmask: NDArray[Any] | None = None, w_hr: NDArray[Any] | None = None
                  ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, dict[str, Any] | None]:
    """A whole sequence through the C ABI; same arguments and results as the backend contract.
    The C functions take dense arrays: an ``out`` that is not C-contiguous is filled from a
    dense one (a copy the compiled backend, ``_core.layer_forward``, does not make). With
    ``w_hr``, ``fastrnn_layer_forward_proj_*``; else with ``peep`` or ``hmask``,
    ``fastrnn_layer_forward_ex_*``."""
    code = _kind_code(kind)
    dt, _, B, I, H = check_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep=peep, hmask=hmask,
                                   w_hr=w_hr)
    T, P = x.shape[0], h0.shape[1]  # P: the units of h
    lstm = code in _CELL_STATE_CODES
    check_out(out, (T, B, P), dt, dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                                       lengths=lengths, peep=peep, hmask=hmask, w_hr=w_hr))
    dense = out if out is not None and out.flags.c_contiguous else np.empty((T, B, P), dt)
    h_n = np.empty((B, P), dt)
    c_n = np.empty((B, H), dt) if lstm else None
    ws = np.empty(int(lib.fastrnn_layer_workspace_size_proj(code, T, B, H, P)), dt) if keep else None
    p: Callable[[Any], Any] = lambda a: _ptr(a, dt)  # noqa: E731
    lp = _lengths_ptr(lengths)
    if w_hr is not None:
        _raise_on("fastrnn_layer_forward_proj",
                  getattr(lib, f"fastrnn_layer_forward_proj_{_SUFFIX[dt]}")(
                      code, T, B, I, H, P, p(x), p(h0), p(c0), p(w_ih), p(w_hh), p(b_ih), p(b_hh), p(peep),
                      p(hmask), p(w_hr), lp, int(bool(reverse)), p(dense), p(h_n), p(c_n), p(ws)))
    elif peep is None and hmask is None:
        _raise_on("fastrnn_layer_forward",
                  getattr(lib, f"fastrnn_layer_forward_{_SUFFIX[dt]}")(
                      code, T, B, I, H, p(x), p(h0), p(c0 if lstm else None), p(w_ih), p(w_hh), p(b_ih), p(b_hh),
                      lp, int(bool(reverse)), p(dense), p(h_n), p(c_n), p(ws)))
    else:
        _raise_on("fastrnn_layer_forward_ex",
                  getattr(lib, f"fastrnn_layer_forward_ex_{_SUFFIX[dt]}")(
                      code, T, B, I, H, p(x), p(h0), p(c0 if lstm else None), p(w_ih), p(w_hh), p(b_ih), p(b_hh),
                      p(peep), p(hmask), lp, int(bool(reverse)), p(dense), p(h_n), p(c_n), p(ws)))
    if out is None:
        out = dense
    elif dense is not out:
        out[...] = dense
    state: dict[str, Any] | None = None
    if keep:
        state = dict(kind=kind, x=x, c0=c0 if lstm else None, w_ih=w_ih, w_hh=w_hh, bias=b_ih is not None,
                     lengths=lengths, reverse=bool(reverse), ws=ws, H=H, P=P, peep=peep, hmask=hmask, w_hr=w_hr)
    return out, h_n, c_n, state


def layer_backward(state: dict[str, Any], grad_out: NDArray[Any] | None, grad_h_n: NDArray[Any] | None,
                   grad_c_n: NDArray[Any] | None) -> dict[str, NDArray[Any] | None]:
    """Gradients of a ``layer_forward(..., keep=True)`` through the C ABI (a ``grad_out`` that is
    not C-contiguous is copied to a dense one: the C function takes dense arrays)."""
    code, x, H, P = _kind_code(state["kind"]), state["x"], state["H"], state["P"]
    dt = x.dtype
    T, B, I = x.shape
    lstm = code in _CELL_STATE_CODES
    check_rows_arg(grad_out, "grad_out", (T, B, P), dt)
    if grad_out is not None:
        grad_out = np.ascontiguousarray(grad_out)
    check_gradients(dt, grad_h_n=(grad_h_n, (B, P)), grad_c_n=(grad_c_n if lstm else None, (B, H)))
    peep, w_hr = state["peep"], state["w_hr"]
    g = _gradient_arrays(code, x, B, H, state["bias"], "h0", "c0", peep, P)
    g["w_hr"] = None if w_hr is None else np.empty_like(w_hr)
    p: Callable[[Any], Any] = lambda a: _ptr(a, dt)  # noqa: E731
    lp = _lengths_ptr(state["lengths"])
    hmask = state["hmask"]
    if w_hr is not None:
        _raise_on("fastrnn_layer_backward_proj",
                  getattr(lib, f"fastrnn_layer_backward_proj_{_SUFFIX[dt]}")(
                      code, T, B, I, H, P, p(x), p(state["c0"]), p(state["w_ih"]), p(state["w_hh"]), p(peep),
                      p(hmask), p(w_hr), lp, int(state["reverse"]), p(state["ws"]), p(grad_out), p(grad_h_n),
                      p(grad_c_n), p(g["x"]), p(g["h0"]), p(g["c0"]), p(g["w_ih"]), p(g["w_hh"]), p(g["b_ih"]),
                      p(g["b_hh"]), p(g["peep"]), p(g["w_hr"])))
    elif peep is None and hmask is None:
        _raise_on("fastrnn_layer_backward",
                  getattr(lib, f"fastrnn_layer_backward_{_SUFFIX[dt]}")(
                      code, T, B, I, H, p(x), p(state["c0"]), p(state["w_ih"]), p(state["w_hh"]), lp,
                      int(state["reverse"]), p(state["ws"]), p(grad_out), p(grad_h_n), p(grad_c_n if lstm else None),
                      p(g["x"]), p(g["h0"]), p(g["c0"]), p(g["w_ih"]), p(g["w_hh"]), p(g["b_ih"]), p(g["b_hh"])))
    else:
        _raise_on("fastrnn_layer_backward_ex",
                  getattr(lib, f"fastrnn_layer_backward_ex_{_SUFFIX[dt]}")(
                      code, T, B, I, H, p(x), p(state["c0"]), p(state["w_ih"]), p(state["w_hh"]), p(peep), p(hmask),
                      lp, int(state["reverse"]), p(state["ws"]), p(grad_out), p(grad_h_n),
                      p(grad_c_n if lstm else None), p(g["x"]), p(g["h0"]), p(g["c0"]), p(g["w_ih"]), p(g["w_hh"]),
                      p(g["b_ih"]), p(g["b_hh"]), p(g["peep"])))
    return g
