"""The contract (fastrnn.backends.contract): a None gradient argument means a zero gradient, on every backend (and the C ABI helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BACKENDS
from fastrnn import backends
from fastrnn.backends.contract import GATES, KINDS


def _modules():
    mods = [(name, backends.get_backend(name)) for name in BACKENDS]
    try:
        from fastrnn import capi
        mods.append(("capi", capi))
    except ImportError:
        pass
    return mods


def _args(kind, cell, rng):
    G, T, B, I, H = GATES[kind], 3, 2, 4, 5
    x = rng.standard_normal((B, I) if cell else (T, B, I))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H)) if kind == "lstm" else None
    return [x, h, c, rng.standard_normal((G * H, I)), rng.standard_normal((G * H, H)),
            rng.standard_normal(G * H), rng.standard_normal(G * H)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name, mod", _modules(), ids=[n for n, _ in _modules()])
def test_none_gradients_mean_zero(name, mod, kind):
    rng = np.random.default_rng(0)
    a = _args(kind, True, rng)
    zeros = np.zeros_like(a[1])
    _, _, ws = mod.cell_forward(kind, *a, True)
    _, _, ws0 = mod.cell_forward(kind, *a, True)
    g = mod.cell_backward(ws, None, None)
    g0 = mod.cell_backward(ws0, zeros, zeros if kind == "lstm" else None)
    for k in ("x", "h", "w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(g[k], g0[k], err_msg=f"{name} cell {k}")
    a = _args(kind, False, rng)
    _, _, _, ws = mod.layer_forward(kind, *a, None, False, True)
    _, _, _, ws0 = mod.layer_forward(kind, *a, None, False, True)
    T, B, H = a[0].shape[0], a[0].shape[1], a[1].shape[1]
    g = mod.layer_backward(ws, None, None, None)
    g0 = mod.layer_backward(ws0, np.zeros((T, B, H)), np.zeros((B, H)),
                            np.zeros((B, H)) if kind == "lstm" else None)
    for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(g[k], g0[k], err_msg=f"{name} layer {k}")


@pytest.mark.parametrize("name, mod", _modules(), ids=[n for n, _ in _modules()])
def test_cell_backward_errors_name_the_cell_arguments(name, mod):
    if name == "numpy":
        pytest.skip("the reference relies on the layers' checks (CONTRACT.md); the other backends check at their boundary")
    rng = np.random.default_rng(0)
    a = _args("lstm", True, rng)
    _, _, ws = mod.cell_forward("lstm", *a, True)
    with pytest.raises((ValueError, TypeError), match="grad_h"):
        mod.cell_backward(ws, np.zeros((7, 7)), None)
    _, _, ws = mod.cell_forward("lstm", *a, True)
    with pytest.raises((ValueError, TypeError), match="grad_c"):
        mod.cell_backward(ws, None, np.zeros((7, 7)))
