"""What backward needs from a forward cannot be changed behind its back.

Between a forward and its backward a caller may write into any array it
passed or got back (a reused input buffer, ``h[...] = new_h``, an edited
``lengths``), or replace parameters (``load_state_dict``, assignment). The
gradient must then be the gradient of the forward that ran (the layers keep
private copies of what is cheap to copy), or backward raises GradientError
naming what changed (parameters, by version) -- never a silently different
gradient, and the same on every backend.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from conftest import BACKENDS

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
CELLS = {"lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell, "rnn": fastrnn.RNNCell}
PARAM_CHANGES = ("load_state_dict", "assign")


def _scribble(a):
    """Overwrite an array the caller holds, in place."""
    a[...] = 7 if a.dtype.kind in "iu" else np.asarray(a) * -3.0 + 0.5


def _change_parameters(module, target, seed):
    """For target "load_state_dict" or "assign", replace one of ``module``'s parameters (chosen by
    ``seed``) that way and return True; for any other target return False."""
    if target == "load_state_dict":
        sd = module.state_dict()
        name = sorted(sd)[seed % len(sd)]
        sd[name] = sd[name] + 1
        module.load_state_dict(sd)
    elif target == "assign":
        name = sorted(module._params)[seed % len(module._params)]
        setattr(module, name, getattr(module, name) * 2)
    else:
        return False
    return True


def _grads(m):
    return {k: v.copy() for k, v in m.grads.items()}


def _assert_same(a, b, what):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-12, err_msg=f"{what}: gradient of {k}")


@st.composite
def layer_case(draw):
    kind = draw(st.sampled_from(list(LAYERS)))
    T, B, I, H = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    opts = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                batch_first=draw(st.booleans()))
    padded = draw(st.booleans())
    unbatched = not padded and draw(st.booleans())
    kept = ["x", "h0", "out", "h_n"] + (["c0", "c_n"] if kind == "lstm" else []) + (["lengths"] if padded else [])
    target = draw(st.sampled_from(kept + list(PARAM_CHANGES)))
    return kind, T, B, I, H, opts, padded, unbatched, target, draw(st.integers(0, 2**31))


@SETTINGS
@given(case=layer_case(), backend=st.sampled_from(BACKENDS))
def test_layer_mutation_between_forward_and_backward(case, backend):
    kind, T, B, I, H, opts, padded, unbatched, target, seed = case
    rng = np.random.default_rng(seed)
    layer = LAYERS[kind](I, H, dtype=np.float64, backend=backend, seed=seed, **opts)
    clean = copy.deepcopy(layer)
    D, L = (2 if opts["bidirectional"] else 1), opts["num_layers"]
    if unbatched:
        x, sshape = rng.standard_normal((T, I)), (L * D, H)
    else:
        x = rng.standard_normal((B, T, I) if opts["batch_first"] else (T, B, I))
        sshape = (L * D, B, H)
    h0, c0 = rng.standard_normal(sshape), rng.standard_normal(sshape)
    lengths = rng.integers(1, T + 1, size=B) if padded else None
    if padded:
        lengths[0] = T

    def run(m, xx, hh, cc, ll, mutate):
        out, state = m(xx, (hh, cc) if kind == "lstm" else hh, lengths=ll)
        h_n, c_n = state if kind == "lstm" else (state, None)
        g = np.ones_like(out)
        mutate(dict(x=xx, h0=hh, c0=cc, lengths=ll, out=out, h_n=h_n, c_n=c_n))
        return m.backward(g, (np.ones_like(h_n), None) if kind == "lstm" else np.ones_like(h_n))

    ref = run(clean, x.copy(), h0.copy(), c0.copy(), None if lengths is None else lengths.copy(), lambda a: None)

    def mutate(arrays):
        if not _change_parameters(layer, target, seed):
            _scribble(arrays[target])

    if target in PARAM_CHANGES:
        with pytest.raises(fastrnn.GradientError, match="replaced"):
            run(layer, x, h0, c0, lengths, mutate)
        return
    got = run(layer, x, h0, c0, lengths, mutate)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12, atol=1e-12, err_msg=f"{target}: dx")
    _assert_same(_grads(clean), _grads(layer), target)


@st.composite
def cell_case(draw):
    kind = draw(st.sampled_from(list(CELLS)))
    B, I, H = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    unbatched = draw(st.booleans())
    steps = draw(st.integers(1, 3))
    kept = ["x", "h", "h_new"] + (["c", "c_new"] if kind == "lstm" else [])
    target = draw(st.sampled_from(kept + list(PARAM_CHANGES)))
    return kind, B, I, H, unbatched, steps, target, draw(st.integers(0, 2**31))


@SETTINGS
@given(case=cell_case(), backend=st.sampled_from(BACKENDS))
def test_cell_mutation_between_forward_and_backward(case, backend):
    """A chain of ``steps`` cell calls reading one reused input buffer and state buffers, each
    written after the call that read it (a loop with preallocated buffers), then backward
    through the chain: the gradients of the calls that ran."""
    kind, B, I, H, unbatched, steps, target, seed = case
    rng = np.random.default_rng(seed)
    cell = CELLS[kind](I, H, dtype=np.float64, backend=backend, seed=seed)
    clean = copy.deepcopy(cell)
    shape_x, shape_h = ((I,), (H,)) if unbatched else ((B, I), (B, H))
    xs = [rng.standard_normal(shape_x) for _ in range(steps)]
    h0, c0 = rng.standard_normal(shape_h), rng.standard_normal(shape_h)

    def chain(m, mutate):
        x_buf, h, c = np.empty(shape_x), h0.copy(), c0.copy()
        outs = []
        for t in range(steps):
            x_buf[...] = xs[t]
            new = m(x_buf, (h, c) if kind == "lstm" else h)
            h_new, c_new = new if kind == "lstm" else (new, None)
            outs.append(new)
            mutate(dict(x=x_buf, h=h, c=c, h_new=h_new, c_new=c_new))
            h, c = h_new, c_new
        res = []
        gh = np.ones(shape_h)
        for _ in range(steps):
            dx, dstate = m.backward((gh, None) if kind == "lstm" else gh)
            gh = dstate[0] if kind == "lstm" else dstate
            res.append(dx)
        return res, outs

    ref, _ = chain(clean, lambda a: None)

    def mutate(arrays):
        # h_new, c_new: written after the next call read it (below), so the chain's values stay the same
        if not _change_parameters(cell, target, seed) and target not in ("h_new", "c_new"):
            _scribble(arrays[target])

    if target in PARAM_CHANGES:
        with pytest.raises(fastrnn.GradientError, match="replaced"):
            chain(cell, mutate)
        return
    if target in ("h_new", "c_new"):
        outs_mut = []

        def mutate(arrays):  # noqa: F811 - scribble on the previous step's output once this step has read it
            if outs_mut:
                prev = outs_mut[-1]
                _scribble(prev[0 if target == "h_new" else 1] if kind == "lstm" else prev)
            outs_mut.append(arrays["h_new"] if kind != "lstm" else (arrays["h_new"], arrays["c_new"]))
    got, _ = chain(cell, mutate)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{target}: dx")
    _assert_same(_grads(clean), _grads(cell), target)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_state_updated_in_place_is_refused_not_wrong(backend, kind):
    """``h[...] = cell(x, h)`` drops what the call returned: backward raises instead of
    differentiating with the overwritten state (or an older call)."""
    cell = CELLS[kind](3, 4, dtype=np.float64, backend=backend, seed=0)
    x = np.ones((2, 3))
    h, c = np.zeros((2, 4)), np.zeros((2, 4))
    kept = cell(x, (h, c) if kind == "lstm" else h)  # a call whose outputs stay alive
    for _ in range(3):
        if kind == "lstm":
            h[...], c[...] = cell(x, (h, c))
        else:
            h[...] = cell(x, h)
    g = (np.ones((2, 4)), None) if kind == "lstm" else np.ones((2, 4))
    with pytest.raises(fastrnn.GradientError, match="dropped"):
        cell.backward(g)
    assert kept is not None


def test_cell_chain_survives_dropped_intermediate_names(backend):
    """``h = cell(x, h)`` rebinding the name keeps the chain: each call holds the output it took."""
    cell = fastrnn.GRUCell(3, 4, dtype=np.float64, backend=backend, seed=0)
    h = np.zeros((2, 4))
    for t in range(4):
        h = cell(np.full((2, 3), float(t)), h)
    dh = np.ones((2, 4))
    for _ in range(4):
        _, dh = cell.backward(dh)
    with pytest.raises(fastrnn.GradientError, match="no recorded"):
        cell.backward(dh)


@pytest.mark.parametrize("module", ["Linear", "SequenceModel"])
def test_linear_and_model_keep_their_input(module):
    rng = np.random.default_rng(0)
    if module == "Linear":
        m = fastrnn.nn.Linear(3, 2, dtype=np.float64, seed=0)
        x = rng.standard_normal((4, 3))
    else:
        m = fastrnn.nn.SequenceModel(2, 5, num_layers=2, dtype=np.float64, seed=0)
        x = rng.standard_normal((6, 3, 2))
    clean = copy.deepcopy(m)
    y = clean(x.copy())
    clean.backward(np.ones_like(y))
    y = m(x)
    x *= -2
    m.backward(np.ones_like(y))
    _assert_same(_grads(clean), _grads(m), module)
    y = m(x)
    sd = m.state_dict()
    sd[sorted(sd)[0]] += 1
    m.load_state_dict(sd)
    with pytest.raises(fastrnn.GradientError, match="replaced"):
        m.backward(np.ones_like(y))


def test_failed_backward_leaves_the_forward_usable(backend, monkeypatch):
    """A backward that fails before computing anything (here: the backend raises MemoryError)
    keeps the forward recorded: a retry differentiates it."""
    for make, grad in ((lambda: fastrnn.GRU(3, 4, dtype=np.float64, backend=backend, seed=0), "layer_backward"),
                       (lambda: fastrnn.GRUCell(3, 4, dtype=np.float64, backend=backend, seed=0), "cell_backward")):
        m = make()
        clean = copy.deepcopy(m)
        x = np.ones((5, 2, 3)) if grad == "layer_backward" else np.ones((2, 3))
        out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        ref_out = clean(x)
        ref_out = ref_out[0] if isinstance(ref_out, tuple) else ref_out
        clean.backward(np.ones_like(ref_out))
        mod = m._backend()
        real = getattr(mod, grad)
        calls = []

        def failing(*a, **k):
            calls.append(1)
            raise MemoryError("no memory (simulated)")

        monkeypatch.setattr(mod, grad, failing)
        with pytest.raises(MemoryError):
            m.backward(np.ones_like(out))
        monkeypatch.setattr(mod, grad, real)
        assert calls
        m.backward(np.ones_like(out))
        _assert_same(_grads(clean), _grads(m), grad)
