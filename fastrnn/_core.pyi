"""Type stub of ``fastrnn._core``, the compiled extension (pybind11 bindings of the C++ kernels).

The arrays are float32 or float64 NumPy arrays, all of one dtype per call; the
shapes and the meaning of every argument are the backend contract
(``fastrnn/backends/CONTRACT.md``). ``mypy.stubtest fastrnn._core`` (CI)
checks this file against the built module.
"""

from typing import Any, SupportsIndex, SupportsInt, overload

import numpy as np
from numpy.typing import NDArray

class LayerWorkspace:
    """What layer_backward needs from a training layer_forward (opaque)."""

class CellWorkspace:
    """What cell_backward needs from a training cell_forward (opaque)."""

#: kind: "rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig" or "lstm_cifg"
def layer_forward(
    kind: str,
    x: NDArray[Any],
    h0: NDArray[Any] | None,
    c0: NDArray[Any] | None,
    w_ih: NDArray[Any],
    w_hh: NDArray[Any],
    b_ih: NDArray[Any] | None,
    b_hh: NDArray[Any] | None,
    lengths: NDArray[Any] | None,
    reverse: bool,
    keep: bool,
    out: NDArray[Any] | None = None,
    peep: NDArray[Any] | None = None,
    hmask: NDArray[Any] | None = None,
    w_hr: NDArray[Any] | None = None,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, LayerWorkspace | None]:
    """One layer, one direction, whole sequence: (out, h_n, c_n, ws); ``peep``: the LSTM's
    peephole weights [3*H] (p_i, p_f, p_o) or None; ``hmask``: [B, P], the recurrent input's mask;
    ``w_hr``: the LSTM's projection [P, H] or None (then P = H)."""

def layer_backward(
    ws: LayerWorkspace,
    grad_out: NDArray[Any] | None,
    grad_h_n: NDArray[Any] | None,
    grad_c_n: NDArray[Any] | None,
    acc: tuple[NDArray[Any], NDArray[Any]] | None = None,
) -> dict[str, NDArray[Any] | None]:
    """Gradients of the layer_forward that made ``ws``: x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr."""

def cell_forward(
    kind: str,
    x: NDArray[Any],
    h: NDArray[Any] | None,
    c: NDArray[Any] | None,
    w_ih: NDArray[Any],
    w_hh: NDArray[Any],
    b_ih: NDArray[Any] | None,
    b_hh: NDArray[Any] | None,
    keep: bool,
    peep: NDArray[Any] | None = None,
    hmask: NDArray[Any] | None = None,
) -> tuple[NDArray[Any], NDArray[Any] | None, CellWorkspace | None]:
    """One step: (h_new, c_new, ws); ``peep`` and ``hmask`` ([B, H]) as in layer_forward."""

def cell_backward(
    ws: CellWorkspace, grad_h: NDArray[Any] | None, grad_c: NDArray[Any] | None
) -> dict[str, NDArray[Any] | None]:
    """Gradients of the cell_forward that made ``ws``: x, h, c, w_ih, w_hh, b_ih, b_hh, peep."""

def set_num_threads(n: SupportsInt | SupportsIndex) -> None: ...
def get_num_threads() -> int: ...
def set_cache_limit(nbytes: SupportsInt | SupportsIndex) -> None: ...
def get_cache_limit() -> int: ...
def cached_bytes() -> int: ...
def release_cache() -> None: ...
def set_gemm(which: str) -> None:
    """'builtin' (the kernels' own GEMM, the default) or 'scipy' (SciPy's BLAS)."""
def blas_info() -> str: ...
def build_info() -> dict[str, str]: ...
def simd_path() -> str: ...
def reduced_precision_features() -> list[str]:
    """The reduced-precision instructions this CPU has (names as in /proc/cpuinfo; no kernel uses them yet)."""

REDUCED_PRECISION_FEATURES: list[str]

# test hooks
@overload
def _activation(which: str, x: NDArray[np.float32]) -> NDArray[np.float32]: ...  # type: ignore[overload-overlap]
@overload
def _activation(which: str, x: NDArray[np.float64]) -> NDArray[np.float64]: ...
@overload
def _matmul(  # type: ignore[overload-overlap]
    a: NDArray[np.float32], b: NDArray[np.float32], ta: bool = False, tb: bool = False
) -> NDArray[np.float32]: ...
@overload
def _matmul(a: NDArray[np.float64], b: NDArray[np.float64], ta: bool = False, tb: bool = False) -> NDArray[np.float64]: ...
def _inject_failure(what: str, n: int) -> int: ...
