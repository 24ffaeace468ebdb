"""What the backend tests share: random arguments of the contract, running a layer or a cell
through a backend, comparing with the NumPy reference, and finite differences."""

from __future__ import annotations

import importlib

import numpy as np

from fastrnn import backends
from fastrnn.backends import reference
from fastrnn.backends.contract import GATES, PEEPHOLES, has_cell_state

# Tolerances against the reference: float64 to 1e-10, float32 to 1e-5.
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def tol(dtype):
    """``assert_allclose`` keywords of the suite's tolerance for ``dtype``."""
    t = TOL[np.dtype(dtype)]
    return dict(rtol=t, atol=t)


def layer_args(kind, T, B, I, H, dtype, *, bias=True, seed=0, scale=0.5, rng=None, P=None):
    """Arguments of ``layer_forward`` in the contract's order (x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    x and the states N(0, 1), weights and biases N(0, scale^2), in ``dtype``. ``P``: an LSTM's
    projection of P units (h0 [B, P], w_hh [G*H, P], and a last entry ``w_hr`` [P, H])."""
    rng = np.random.default_rng(seed) if rng is None else rng
    G = GATES[kind]
    S = H if P is None else P  # the units of h

    def r(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    args = dict(
        x=r(T, B, I),
        h0=r(B, S),
        c0=r(B, H) if has_cell_state(kind) else None,
        w_ih=r(G * H, I, s=scale),
        w_hh=r(G * H, S, s=scale),
        b_ih=r(G * H, s=scale) if bias else None,
        b_hh=r(G * H, s=scale) if bias else None,
    )
    if P is not None:
        args["w_hr"] = r(P, H, s=scale)
    return args


def peephole_weights(H, dtype, seed=0, scale=0.5):
    """An LSTM's peephole weights ``[3 * H]`` (p_i, p_f, p_o), N(0, scale^2), in ``dtype``."""
    return (np.random.default_rng(seed + 11).standard_normal(PEEPHOLES * H) * scale).astype(dtype)


def cell_args(kind, B, I, H, dtype, **kw):
    """Arguments of ``cell_forward`` (x, h, c, w_ih, w_hh, b_ih, b_hh); as :func:`layer_args`."""
    a = layer_args(kind, 1, B, I, H, dtype, **kw)
    return dict(x=a["x"][0], h=a["h0"], c=a["c0"], w_ih=a["w_ih"], w_hh=a["w_hh"], b_ih=a["b_ih"], b_hh=a["b_hh"])


def layer_grads(kind, T, B, H, dtype, seed=0, P=None):
    """(grad_out, grad_h_n, grad_c_n) of ``layer_backward``, N(0, 1) (``P``: the units of h of a
    projected LSTM)."""
    rng = np.random.default_rng(seed + 7)
    S = H if P is None else P
    return (rng.standard_normal((T, B, S)).astype(dtype), rng.standard_normal((B, S)).astype(dtype),
            rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None)


def random_lengths(T, B, seed=0):
    """int64 lengths in [1, T] with at least one full sequence."""
    lengths = np.random.default_rng(seed + 100).integers(1, T + 1, size=B).astype(np.int64)
    lengths[0] = T
    return lengths


def run_layer(mod, kind, a, lengths, reverse, keep=True, grads=None):
    """``((out, h_n, c_n, ws), gradients or None)`` of ``a`` (:func:`layer_args`) through ``mod``."""
    out = mod.layer_forward(kind, *a.values(), lengths, reverse, keep)
    g = mod.layer_backward(out[3], *grads) if keep and grads is not None else None
    return out, g


def assert_close(actual, expected, what, scaled=False):
    """``actual`` has ``expected``'s dtype and shape and its values within :data:`TOL` (None if it is
    None). ``scaled``: the absolute tolerance times max(1, max|expected|), for long sums."""
    if expected is None:
        assert actual is None, what
        return
    assert actual is not None, what
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    t = TOL[expected.dtype]
    scale = max(1.0, float(np.max(np.abs(expected)))) if scaled and expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=t, atol=t * scale, err_msg=what)


def check_layer_against_reference(mod, kind, T, B, I, H, dtype, *, bias=True, lengths=None, reverse=False,
                                  keep=True, seed=0, scale=0.5, scaled=False):
    """Run one layer on ``mod`` and on the reference: outputs, and with ``keep`` every gradient,
    agree; the inputs are not modified; padded steps give zero gradient into x. Returns ``mod``'s
    ``(out, h_n, c_n, ws)``."""
    a = layer_args(kind, T, B, I, H, dtype, bias=bias, seed=seed, scale=scale)
    before = {k: None if v is None else v.copy() for k, v in a.items()}
    grads = layer_grads(kind, T, B, H, dtype, seed)
    got, got_g = run_layer(mod, kind, a, lengths, reverse, keep, grads)
    want, want_g = run_layer(reference, kind, a, lengths, reverse, keep, grads)
    for name, g, w in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(g, w, f"{kind} {name}", scaled)
    for k, v in a.items():
        if v is not None:
            np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was modified")
    if not keep:
        assert got[3] is None
        return got
    assert set(got_g) == set(want_g)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"{kind} grad {name}", scaled)
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert not got_g["x"][n:, b].any(), "padded steps give zero gradient into x"
    return got


def check_cell_against_reference(mod, kind, B, I, H, dtype, *, bias=True, keep=True, seed=0, scale=0.5,
                                 scaled=False):
    """One step on ``mod`` and on the reference: new states and (with ``keep``) gradients agree."""
    a = cell_args(kind, B, I, H, dtype, bias=bias, seed=seed, scale=scale)
    got = mod.cell_forward(kind, *a.values(), keep)
    want = reference.cell_forward(kind, *a.values(), True)
    assert_close(got[0], want[0], f"{kind} h_new", scaled)
    assert_close(got[1], want[1], f"{kind} c_new", scaled)
    if not keep:
        assert got[2] is None
        return
    rng = np.random.default_rng(seed + 3)
    gh = rng.standard_normal((B, H)).astype(dtype)
    gc = rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None
    got_g = mod.cell_backward(got[2], gh, gc)
    want_g = reference.cell_backward(want[2], gh, gc)
    assert set(got_g) == set(want_g)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"{kind} cell grad {name}", scaled)


def numeric_grad(f, args, name, eps=1e-6):
    """Central finite differences of the scalar ``f()`` with respect to ``args[name]`` (changed in place)."""
    v = args[name]
    g = np.zeros_like(v)
    for idx in np.ndindex(v.shape):
        old = v[idx]
        v[idx] = old + eps
        fp = f()
        v[idx] = old - eps
        fm = f()
        v[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def same_on_one_and_two_threads(run):
    """``run()`` (a layer's forward and backward: ``((out, h_n, c_n, ws), gradient dict)``) gives
    bitwise the same outputs and gradients on 1 and 2 of fastrnn's threads (the count restored)."""
    import fastrnn

    results = []
    before = fastrnn.get_num_threads()
    try:
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            results.append(run())
    finally:
        fastrnn.set_num_threads(before)
    (f1, g1), (f2, g2) = results
    for x, y in zip(f1[:3], f2[:3]):
        np.testing.assert_array_equal(x, y)
    assert set(g1) == set(g2)
    for k in g1:
        if g1[k] is not None:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def lstm_layer_matches_finite_differences(layer, x, lengths, seed=4):
    """Every parameter gradient of a float64 ``fastrnn.LSTM`` ``layer`` on ``x`` (padded to
    ``lengths``) against finite differences of ``sum(out*go) + sum(h_n*gh) + sum(c_n*gc)`` (random
    go, gh, gc of the results' shapes)."""
    import fastrnn

    with fastrnn.no_grad():
        out, (h_n, c_n) = layer(x, lengths=lengths)
    rng = np.random.default_rng(seed)
    go, gh, gc = (rng.standard_normal(a.shape) for a in (out, h_n, c_n))

    def loss():
        with fastrnn.no_grad():
            out, (h_n, c_n) = layer(x, lengths=lengths)
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    layer.zero_grad()
    layer(x, lengths=lengths)
    layer.backward(go, (gh, gc))
    params = dict(layer.named_parameters())
    for name in params:
        np.testing.assert_allclose(layer.grads[name], numeric_grad(loss, params, name), rtol=1e-6, atol=1e-7,
                                   err_msg=name)


def compile_matches_eager(model, x):
    """``torch.compile(model, fullgraph=True)`` (a graph break is an error) gives the eager outputs
    (1e-6) and, through ``sum().backward()``, the eager parameter gradients (1e-5); returns the eager
    output and gradients. torch is imported here: this module serves torch-free tests too."""
    import torch

    eager = model(x)
    eager.sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    got = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
    got.sum().backward()
    for (name, p), w in zip(model.named_parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-6, msg=name)
    return eager, want


def export_matches_eager(model, x):
    """``torch.export.export(model, (x,))`` gives the eager inference output (1e-6); returns the set
    of the exported graph's call targets (as strings)."""
    import torch

    with torch.no_grad():
        eager = model(x)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), eager, rtol=1e-6, atol=1e-6)
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def contract_module_of(name):
    """The module of a name of ``conftest.contract_modules()``: a backend, or ``fastrnn.capi``."""
    return importlib.import_module("fastrnn.capi") if name == "capi" else backends.get_backend(name)
