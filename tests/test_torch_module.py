"""fastrnn.torch's modules against torch.nn's: outputs, final states and every gradient."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.torch as ft  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
LAYERS = {"LSTM": (nn.LSTM, ft.LSTM), "GRU": (nn.GRU, ft.GRU), "RNN": (nn.RNN, ft.RNN)}
CELLS = {"LSTMCell": (nn.LSTMCell, ft.LSTMCell), "GRUCell": (nn.GRUCell, ft.GRUCell), "RNNCell": (nn.RNNCell, ft.RNNCell)}


def close(a, b, dtype, what):
    scale = max(1.0, float(b.detach().abs().max())) if b.numel() else 1.0
    err = float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert err <= TOL[dtype] * scale, f"{what}: max abs difference {err:.3g}"


def pair(kind, dtype, **kw):
    """A torch.nn module and its fastrnn.torch twin with the same weights."""
    ref_cls, cls = {**LAYERS, **CELLS}[kind]
    ref = ref_cls(dtype=dtype, **kw)
    mod = cls(dtype=dtype, **kw)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def loss_of(out, hidden):
    """A loss touching every output with different weights (so each gradient is exercised)."""
    total = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    for i, s in enumerate(states):
        total = total + (s * s).sum() * (i + 1) * 0.5
    return total


def random_configs(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(dict(kind=rng.choice(list(LAYERS)), dtype=rng.choice([torch.float32, torch.float64]),
                        num_layers=rng.choice([1, 2, 3]), bidirectional=rng.random() < 0.5,
                        batch_first=rng.random() < 0.5, bias=rng.random() < 0.8,
                        nonlinearity=rng.choice(["tanh", "relu"]), input_size=rng.randint(1, 7),
                        hidden_size=rng.randint(1, 9), T=rng.randint(1, 8), B=rng.randint(1, 5),
                        packed=rng.choice([None, "sorted", "unsorted"]), with_hx=rng.random() < 0.5, seed=i))
    return out


def _ids(c):
    return (f"{c['kind']}-{str(c['dtype'])[6:]}-L{c['num_layers']}{'-bi' if c['bidirectional'] else ''}"
            f"{'-bf' if c['batch_first'] else ''}-{c['packed'] or 'padded'}{'-hx' if c['with_hx'] else ''}")


@pytest.mark.parametrize("cfg", random_configs(40, 1234), ids=_ids)
def test_layer_parity(cfg):
    torch.manual_seed(cfg["seed"])
    kind, dtype = cfg["kind"], cfg["dtype"]
    kw = dict(input_size=cfg["input_size"], hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"],
              bias=cfg["bias"], batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"])
    if kind == "RNN":
        kw["nonlinearity"] = cfg["nonlinearity"]
    ref, mod = pair(kind, dtype, **kw)
    T, B, D, H = cfg["T"], cfg["B"], 2 if cfg["bidirectional"] else 1, cfg["hidden_size"]
    x = torch.randn((B, T, kw["input_size"]) if cfg["batch_first"] else (T, B, kw["input_size"]), dtype=dtype)
    hx = None
    if cfg["with_hx"]:
        h0 = torch.randn(cfg["num_layers"] * D, B, H, dtype=dtype)
        hx = (h0, torch.randn_like(h0)) if kind == "LSTM" else h0
    lengths = None
    if cfg["packed"]:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[random.Random(cfg["seed"]).randrange(B)] = T
        if cfg["packed"] == "sorted":
            lengths = lengths.sort(descending=True).values

    results = []
    for m in (ref, mod):
        xi = x.clone().requires_grad_()
        hi = None if hx is None else (tuple(t.clone().requires_grad_() for t in hx) if kind == "LSTM"
                                      else hx.clone().requires_grad_())
        inp = xi if lengths is None else pack_padded_sequence(xi, lengths, batch_first=cfg["batch_first"],
                                                              enforce_sorted=cfg["packed"] == "sorted")
        out, hidden = m(inp, hi)
        if lengths is not None:
            assert isinstance(out, nn.utils.rnn.PackedSequence)
            out_data = out.data
            out, _ = pad_packed_sequence(out, batch_first=cfg["batch_first"])
        else:
            out_data = out
        loss_of(out_data, hidden).backward()
        grads = [xi.grad] + ([] if hi is None else [t.grad for t in (hi if kind == "LSTM" else (hi,))])
        results.append((out, hidden, grads, {n: p.grad for n, p in m.named_parameters()}))

    (o1, h1, g1, p1), (o2, h2, g2, p2) = results
    close(o2, o1, dtype, "output")
    for a, b in zip(h2 if kind == "LSTM" else (h2,), h1 if kind == "LSTM" else (h1,)):
        close(a, b, dtype, "final state")
    for i, (a, b) in enumerate(zip(g2, g1)):
        close(a, b, dtype, f"input gradient {i}")
    assert p1.keys() == p2.keys()
    for name in p1:
        close(p2[name], p1[name], dtype, f"grad of {name}")


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", ["batched", "unbatched", "no-hx"])
def test_cell_parity(kind, dtype, form):
    torch.manual_seed(3)
    ref, mod = pair(kind, dtype, input_size=5, hidden_size=7)
    lstm = kind == "LSTMCell"
    x = torch.randn(5, dtype=dtype) if form == "unbatched" else torch.randn(4, 5, dtype=dtype)
    shape = (7,) if form == "unbatched" else (4, 7)
    hx = None if form == "no-hx" else ((torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)) if lstm
                                       else torch.randn(shape, dtype=dtype))
    res = []
    for m in (ref, mod):
        xi = x.clone().requires_grad_()
        hi = None if hx is None else (tuple(t.clone().requires_grad_() for t in hx) if lstm
                                      else hx.clone().requires_grad_())
        # two steps, so the state's gradient flows through a cell call
        h = m(xi, hi)
        h = m(xi * 0.5, h)
        loss_of(h[0] if lstm else h, h[1] if lstm else h).backward()
        ins = [xi.grad] + ([] if hi is None else [t.grad for t in (hi if lstm else (hi,))])
        res.append((h, ins, [p.grad for p in m.parameters()]))
    (h1, i1, p1), (h2, i2, p2) = res
    for a, b in zip(h2 if lstm else (h2,), h1 if lstm else (h1,)):
        close(a, b, dtype, "state")
    for a, b in zip(i2 + p2, i1 + p1):
        close(a, b, dtype, "gradient")


def test_dropout_uses_torch_rng():
    ref, mod = pair("LSTM", torch.float64, input_size=3, hidden_size=4, num_layers=3, dropout=0.4)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.manual_seed(7)
    o1, _ = ref(x)
    torch.manual_seed(7)
    o2, _ = mod(x)
    close(o2, o1, torch.float64, "output with dropout")
    mod.eval()
    ref.eval()
    close(mod(x)[0], ref(x)[0], torch.float64, "eval output")
    assert not torch.equal(o2, mod(x)[0])  # dropout did act in training mode


def test_state_dict_round_trip_and_interface():
    ref = nn.LSTM(3, 5, num_layers=2, bidirectional=True, bias=False)
    mod = ft.LSTM(3, 5, num_layers=2, bidirectional=True, bias=False)
    assert list(mod.state_dict()) == list(ref.state_dict())
    mod.load_state_dict(ref.state_dict())
    back = nn.LSTM(3, 5, num_layers=2, bidirectional=True, bias=False)
    back.load_state_dict(mod.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert repr(mod) == repr(ref)
    assert repr(ft.RNN(2, 3, 2, "relu", dropout=0.5)) == repr(nn.RNN(2, 3, 2, "relu", dropout=0.5))
    assert repr(ft.GRUCell(2, 3, bias=False)) == repr(nn.GRUCell(2, 3, bias=False))
    mod.flatten_parameters()
    before = mod.weight_hh_l1.detach().clone()
    mod.reset_parameters()
    assert not torch.equal(before, mod.weight_hh_l1)
    bound = 1 / 5 ** 0.5
    assert float(mod.weight_hh_l1.detach().abs().max()) <= bound
    m = ft.GRU(2, 3, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())


def test_no_grad_and_inference_mode_keep_nothing():
    mod = ft.GRU(3, 4, num_layers=2)
    cell = ft.LSTMCell(3, 4)
    x = torch.randn(5, 2, 3)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out, h = mod(x)
            hc = cell(x[0])
        assert out.grad_fn is None and h.grad_fn is None and hc[0].grad_fn is None
    assert ft.pending_workspaces() == 0
    out, h = mod(x)
    assert out.grad_fn is not None


def test_double_backward_is_a_clear_error():
    mod = ft.LSTM(2, 3, dtype=torch.float64)
    x = torch.randn(4, 1, 2, dtype=torch.float64, requires_grad=True)
    out, _ = mod(x)
    with pytest.raises(RuntimeError, match="double backward"):
        (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        gx.sum().backward()


def test_retain_graph_second_backward_recomputes():
    mod = ft.GRU(2, 3, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    out, _ = mod(x)
    out.sum().backward(retain_graph=True)
    first = mod.weight_hh_l0.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(mod.weight_hh_l0.grad, 2 * first, rtol=1e-12, atol=1e-12)


def test_backends_agree():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    grads = {}
    for backend in fastrnn.available_backends():
        mod = ft.LSTM(4, 6, bidirectional=True, dtype=torch.float64, backend=backend)
        torch.manual_seed(1)
        mod.reset_parameters()
        out, (h, c) = mod(x)
        loss_of(out, (h, c)).backward()
        grads[backend] = [out] + [p.grad for p in mod.parameters()]
    base = grads.pop("numpy")
    for backend, gs in grads.items():
        for a, b in zip(gs, base):
            close(a, b, torch.float64, backend)


def test_gradcheck_layers_and_cells():
    torch.manual_seed(0)
    dd = dict(dtype=torch.float64)
    for kind in ("LSTM", "GRU", "RNN"):
        mod = LAYERS[kind][1](3, 4, num_layers=2, bidirectional=True, **dd)
        x = torch.randn(4, 2, 3, requires_grad=True, **dd)
        h0 = torch.randn(4, 2, 4, requires_grad=True, **dd)
        c0 = torch.randn(4, 2, 4, requires_grad=True, **dd)
        lengths = torch.tensor([4, 2])
        params = list(mod.parameters())

        def f(x, h0, c0, *ps, mod=mod, kind=kind):
            for p, v in zip(mod._flat_weights_names, ps):
                mod._parameters[p] = v
            mod._init_flat_weights()
            inp = pack_padded_sequence(x, lengths)
            out, hid = mod(inp, (h0, c0) if kind == "LSTM" else h0)
            return (out.data,) + (hid if kind == "LSTM" else (hid,))

        assert torch.autograd.gradcheck(f, (x, h0, c0, *params))
    for kind in CELLS:
        mod = CELLS[kind][1](3, 4, **dd)
        x = torch.randn(2, 3, requires_grad=True, **dd)
        h = torch.randn(2, 4, requires_grad=True, **dd)
        c = torch.randn(2, 4, requires_grad=True, **dd)
        w = [p.detach().clone().requires_grad_() for p in mod.parameters()]

        def g(x, h, c, *ws, kind=kind):
            out = torch.func.functional_call(mod, dict(zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh"], ws)),
                                             (x, (h, c) if kind == "LSTMCell" else h))
            return out if kind == "LSTMCell" else (out,)

        assert torch.autograd.gradcheck(g, (x, h, c, *w))


# ---------------------------------------------------------------------------
# Bad input: clear errors, catchable as the NumPy API's (ValueError/TypeError) and as torch's (RuntimeError)
# ---------------------------------------------------------------------------


def test_bad_input_errors():
    mod = ft.LSTM(3, 4, num_layers=2, dtype=torch.float32)  # explicit: another test file changes the default
    x = torch.randn(5, 2, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="input_size=3"):
        mod(torch.randn(5, 2, 4, dtype=torch.float32))
    with pytest.raises(RuntimeError, match="input_size=3"):
        mod(torch.randn(5, 2, 4, dtype=torch.float32))
    with pytest.raises(ValueError, match="2D or 3D"):
        mod(torch.randn(5, 2, 1, 3, dtype=torch.float32))
    with pytest.raises(TypeError, match="float64.*float32"):
        mod(x.double())
    with pytest.raises(TypeError, match="torch.float32 or torch.float64"):
        mod(x.half())
    with pytest.raises(TypeError, match="torch.Tensor"):
        mod(x.numpy())
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\)"):
        mod(x, (torch.zeros(1, 2, 4, dtype=torch.float32), torch.zeros(2, 2, 4, dtype=torch.float32)))
    with pytest.raises(TypeError, match="pair"):
        mod(x, torch.zeros(2, 2, 4, dtype=torch.float32))
    with pytest.raises(ValueError, match="3-D"):
        mod(x, (torch.zeros(2, 4, dtype=torch.float32), torch.zeros(2, 4, dtype=torch.float32)))
    with pytest.raises(ValueError, match="at least one"):
        mod(torch.randn(0, 2, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match="device meta"):
        mod(torch.randn(5, 2, 3, device="meta", dtype=torch.float32))
    gru = ft.GRU(3, 4, dtype=torch.float32)
    with pytest.raises(TypeError, match="tensor or None"):
        gru(x, (torch.zeros(1, 2, 4, dtype=torch.float32),))
    cell = ft.GRUCell(3, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(x)
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 4\)"):
        cell(x[0], torch.zeros(3, 4, dtype=torch.float32))
    with pytest.raises(TypeError, match="dtype"):
        cell(x[0].double())
    with pytest.raises(ValueError, match="backend"):
        ft.LSTM(3, 4, backend="nonsense")


def test_import_fastrnn_without_torch(tmp_path):
    """fastrnn's core never imports torch (fastrnn.torch is the only place that does)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import fastrnn, numpy as np; "
            "m = fastrnn.LSTM(2, 3); m(np.zeros((4, 1, 2), np.float32)); "
            "assert 'fastrnn.torch' not in sys.modules; print('ok', fastrnn.__file__)")
    import os
    from pathlib import Path

    source = str(Path(fastrnn.__file__).resolve().parent.parent)  # the fastrnn these tests import
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = source
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=source, env=env)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
    assert res.stdout.split()[-1].startswith(source)


def test_threads_follow_torch_set_num_threads():
    prev_torch, prev_ours = torch.get_num_threads(), fastrnn.get_num_threads()
    mod = ft.GRU(2, 3)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            mod(torch.randn(3, 1, 2))
            assert fastrnn.get_num_threads() == n
    finally:
        torch.set_num_threads(prev_torch)
        fastrnn.set_num_threads(prev_ours)


def test_parameter_updates_are_seen():
    """In-place updates (optimizers), replaced .data and new Parameters all reach the kernels."""
    ref, mod = pair("LSTMCell", torch.float64, input_size=3, hidden_size=4)
    x = torch.randn(2, 3, dtype=torch.float64)
    close(mod(x)[0], ref(x)[0], torch.float64, "before")
    with torch.no_grad():
        for p, q in zip(ref.parameters(), mod.parameters()):
            p.mul_(0.5)
            q.mul_(0.5)
    close(mod(x)[0], ref(x)[0], torch.float64, "after in-place update")
    new = torch.randn(16, 4, dtype=torch.float64)
    ref.weight_hh.data = new.clone()
    mod.weight_hh.data = new.clone()
    close(mod(x)[0], ref(x)[0], torch.float64, "after .data replaced")
    ref.weight_ih = nn.Parameter(torch.randn(16, 3, dtype=torch.float64))
    mod.weight_ih = nn.Parameter(ref.weight_ih.detach().clone())
    close(mod(x)[0], ref(x)[0], torch.float64, "after a new Parameter")


@pytest.mark.parametrize("kind", ["LSTMCell", "GRU"])
def test_functional_call_and_parametrize_reach_the_kernels(kind):
    """Weights that stand in for the parameters (torch.func.functional_call, parametrizations)
    are the ones the kernels use, as in torch.nn."""
    torch.manual_seed(0)
    kw = dict(input_size=3, hidden_size=4)
    ref, mod = pair(kind, torch.float64, **kw)
    x = torch.randn(2, 3, dtype=torch.float64) if kind.endswith("Cell") else torch.randn(5, 2, 3, dtype=torch.float64)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    other = {n: torch.randn_like(p) for n, p in ref.named_parameters()}
    want = first(torch.func.functional_call(ref, other, (x,)))
    close(first(torch.func.functional_call(mod, other, (x,))), want, torch.float64, "functional_call")
    close(first(mod(x)), first(ref(x)), torch.float64, "after functional_call")
    name = "weight_hh" if kind.endswith("Cell") else "weight_hh_l0"

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    for m in (ref, mod):
        torch.nn.utils.parametrize.register_parametrization(m, name, Double())
    close(first(mod(x)), first(ref(x)), torch.float64, "parametrized")
