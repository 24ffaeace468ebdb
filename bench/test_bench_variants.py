"""Benchmarks of the recurrent variants: the LSTM with peepholes, the LSTM with coupled input and
forget gates (``input_forget=True``), recurrent dropout, and the LSTM with a projection
(``proj_size``, against ``torch.nn.LSTM(proj_size=)``, at the end of the file).

In one pytest-benchmark group per (mode, shape, threads): fastrnn's peephole LSTM, fastrnn's
plain LSTM of the same shape (what the peepholes cost), ONNX Runtime's LSTM with ``P``
(inference) and the peephole LSTM written as a PyTorch loop of its equations (what a PyTorch
user writes: ``torch.nn.LSTM`` has no peepholes; autograd gives its backward). Every peephole
result is checked against fastrnn's float64 NumPy reference on the same weights and input.

The coupled input-forget LSTM (ONNX's ``input_forget=1``, f = 1 - i): fastrnn's, the plain LSTM of
the same shape, and ONNX Runtime's LSTM with ``input_forget=1`` (inference); checked against the
float64 reference.

Recurrent dropout (``recurrent_dropout=0.25``, LSTM and GRU in both forms, training): fastrnn's layer with it
against the same layer without it (the target: within 1.15x). Its answer is checked on the first
call (the masks are drawn afresh at every call) against the float64 reference layer drawing the
same masks from the same seed. The same for ``LSTMCell`` and ``GRUCell`` stepped over a sequence
from Python (a mask per sequence, drawn at its first step).

Run from the repository root: ``pytest bench/test_bench_variants.py`` (``--bench-quick``: the
smoke subset).
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest

import fastrnn

#: (B, I, H, T) of the cases.
SHAPES = [(1, 64, 128, 100), (16, 64, 128, 100), (64, 128, 256, 50)]
MODES = ("infer", "train")
THREADS = (1, 2)
IMPLS = ("fastrnn-peep", "fastrnn-plain", "onnxruntime-peep", "torch-loop-peep")
#: max|result - ref| <= RTOL * max|ref| against the float64 reference (float32 results).
RTOL = 1e-4


def _installed(name):
    return importlib.util.find_spec(name) is not None


def _data(B, I, H, T):
    rng = np.random.default_rng(B * 1_000_003 + I * 1009 + H * 31 + T)
    return dict(x=rng.standard_normal((T, B, I)), go=rng.standard_normal((T, B, H)))


def _layer(I, H, peepholes, dtype, backend=None, input_forget=False):
    return fastrnn.LSTM(I, H, peepholes=peepholes, input_forget=input_forget, dtype=dtype, backend=backend,
                        seed=I * 7 + H)


def _results(layer, out, h_n, c_n, dx):
    """What a case checks: the outputs, the final states, dx and every parameter's gradient."""
    return dict(out=out, h_n=h_n[0], c_n=c_n[0], dx=dx, **{k: layer.grads[k] for k, _ in layer.named_parameters()})


def _cached_reference(make):
    """shape -> the float64 reference's results of ``make(shape)`` = (layer, x, go), computed once."""
    cache = {}

    def get(shape):
        if shape not in cache:
            layer, x, go = make(shape)
            out, (h_n, c_n) = layer(x)
            dx, _ = layer.backward(go)
            cache[shape] = _results(layer, out, h_n, c_n, dx)
        return cache[shape]

    return get


@pytest.fixture(scope="module")
def references():
    """shape -> the float64 reference's results of the peephole LSTM."""

    def make(shape):
        B, I, H, T = shape
        d = _data(*shape)
        return _layer(I, H, True, np.float64, backend="numpy"), d["x"], d["go"]

    return _cached_reference(make)


def _check(got, ref):
    for name, value in got.items():
        r = ref[name]
        err = float(np.max(np.abs(np.asarray(value, dtype=np.float64) - r))) / max(float(np.max(np.abs(r))), 1e-30)
        assert err <= RTOL, f"{name}: max relative error {err:.2e} > {RTOL}"


@contextlib.contextmanager
def _threads(n):
    prev = fastrnn.get_num_threads()
    fastrnn.set_num_threads(n)
    torch_prev = None
    if _installed("torch"):
        import torch

        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        fastrnn.set_num_threads(prev)
        if torch_prev is not None:
            import torch

            torch.set_num_threads(torch_prev)


def _fastrnn(mode, shape, peepholes, threads, input_forget=False):
    B, I, H, T = shape
    d = _data(*shape)
    return _layer_calls(_layer(I, H, peepholes, np.float32, input_forget=input_forget), mode,
                        d["x"].astype(np.float32), d["go"].astype(np.float32))


def _layer_calls(layer, mode, x, go):
    """(fn, collect) of a fastrnn LSTM: inference, or training (forward, then backward of ``go``)."""
    if mode == "infer":
        def fn():
            with fastrnn.no_grad():
                return layer(x)

        def collect(r):
            out, (h_n, c_n) = r
            return dict(out=out, h_n=h_n[0], c_n=c_n[0])
    else:
        def fn():
            layer.zero_grad()
            layer(x)
            dx, _ = layer.backward(go)
            return dx

        def collect(dx):
            return dict(dx=dx, **{k: layer.grads[k] for k, _ in layer.named_parameters()})
    return fn, collect


def _onnxruntime(shape, threads, peepholes=True, input_forget=False):
    import onnxruntime as ort

    from fastrnn import onnx as fo

    B, I, H, T = shape
    layer = _layer(I, H, peepholes, np.float32, input_forget=input_forget)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(fo.export(layer).SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"x": _data(*shape)["x"].astype(np.float32)}

    def fn():
        return sess.run(None, feeds)

    def collect(r):
        return dict(out=r[0], h_n=r[1][0], c_n=r[2][0])
    return fn, collect


def _torch_loop(mode, shape):
    import torch

    B, I, H, T = shape
    layer = _layer(I, H, True, np.float32)
    p = {k: torch.tensor(v, requires_grad=mode == "train") for k, v in layer.named_parameters()}
    d = _data(*shape)
    x = torch.tensor(d["x"].astype(np.float32), requires_grad=mode == "train")
    go = torch.tensor(d["go"].astype(np.float32))

    def forward():
        gx = x @ p["weight_ih_l0"].T + (p["bias_ih_l0"] + p["bias_hh_l0"])
        p_i, p_f, p_o = p["weight_peep_l0"].split(H)
        w_hh_t = p["weight_hh_l0"].T
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        outs = []
        for t in range(T):
            a_i, a_f, a_g, a_o = (gx[t] + h @ w_hh_t).split(H, dim=1)
            i = torch.sigmoid(a_i + p_i * c)
            f = torch.sigmoid(a_f + p_f * c)
            c = f * c + i * torch.tanh(a_g)
            o = torch.sigmoid(a_o + p_o * c)
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), h, c

    if mode == "infer":
        def fn():
            with torch.inference_mode():
                return forward()

        def collect(r):
            return dict(out=r[0].numpy(), h_n=r[1].numpy(), c_n=r[2].numpy())
    else:
        names = [k for k, _ in layer.named_parameters()]

        def fn():
            for v in list(p.values()) + [x]:
                v.grad = None
            out, _, _ = forward()
            out.backward(go)
            return x.grad

        def collect(dx):
            return dict(dx=dx.numpy(), **{k: p[k].grad.numpy() for k in names})
    return fn, collect


def _case(first, shape, threads, impl, prefix, quick):
    """One benchmark's ``pytest.param(first, shape, threads, impl)``: id
    ``{prefix}-B..-I..-H..[-P..]-T..-t{threads}-{impl}``, in the quick subset when ``quick``."""
    dims = "-".join(f"{k}{v}" for k, v in zip("BIHPT" if len(shape) == 5 else "BIHT", shape))
    return pytest.param(first, shape, threads, impl, id=f"{prefix}-{dims}-t{threads}-{impl}",
                        marks=[pytest.mark.bench_quick] if quick else [])


def _params():
    return [_case(mode, shape, threads, impl, f"lstm_peep-{mode}", shape == (16, 64, 128, 100) and threads == 1)
            for shape in SHAPES for mode in MODES for threads in THREADS for impl in IMPLS
            if not (impl == "onnxruntime-peep" and mode == "train")]


@pytest.mark.parametrize(("mode", "shape", "threads", "impl"), _params())
def test_lstm_peephole(benchmark, references, mode, shape, threads, impl):
    B, I, H, T = shape
    if impl == "onnxruntime-peep" and not (_installed("onnxruntime") and _installed("onnx")):
        pytest.skip("onnx / onnxruntime are not installed")
    if impl == "torch-loop-peep" and not _installed("torch"):
        pytest.skip("PyTorch is not installed")
    if impl.startswith("fastrnn") and "cpp" not in fastrnn.available_backends():
        pytest.skip("the compiled backend is not installed")
    benchmark.group = f"lstm_peep-{mode}-B{B}-I{I}-H{H}-T{T}-float32-t{threads}"
    benchmark.extra_info.update(variant="lstm_peep", mode=mode, B=B, I=I, H=H, T=T, dtype="float32",
                                threads=threads, impl=impl, verified=False)
    with _threads(threads):
        if impl == "fastrnn-peep" or impl == "fastrnn-plain":
            fn, collect = _fastrnn(mode, shape, impl == "fastrnn-peep", threads)
        elif impl == "onnxruntime-peep":
            fn, collect = _onnxruntime(shape, threads)
        else:
            fn, collect = _torch_loop(mode, shape)
        fn()  # warm-up
        raw = benchmark(fn)
    if impl != "fastrnn-plain":  # the plain LSTM computes something else: it is the cost baseline
        _check(collect(raw), references(shape))
        benchmark.extra_info["verified"] = True


CIFG_IMPLS = ("fastrnn-cifg", "fastrnn-plain", "onnxruntime-cifg")


@pytest.fixture(scope="module")
def cifg_references():
    """shape -> the float64 reference's results of the coupled input-forget LSTM."""

    def make(shape):
        B, I, H, T = shape
        d = _data(*shape)
        return _layer(I, H, False, np.float64, backend="numpy", input_forget=True), d["x"], d["go"]

    return _cached_reference(make)


def _cifg_params():
    return [_case(mode, shape, threads, impl, f"lstm_cifg-{mode}", False)
            for shape in SHAPES for mode in MODES for threads in THREADS for impl in CIFG_IMPLS
            if not (impl == "onnxruntime-cifg" and mode == "train")]


@pytest.mark.parametrize(("mode", "shape", "threads", "impl"), _cifg_params())
def test_lstm_input_forget(benchmark, cifg_references, mode, shape, threads, impl):
    B, I, H, T = shape
    if impl == "onnxruntime-cifg" and not (_installed("onnxruntime") and _installed("onnx")):
        pytest.skip("onnx / onnxruntime are not installed")
    if impl.startswith("fastrnn") and "cpp" not in fastrnn.available_backends():
        pytest.skip("the compiled backend is not installed")
    benchmark.group = f"lstm_cifg-{mode}-B{B}-I{I}-H{H}-T{T}-float32-t{threads}"
    benchmark.extra_info.update(variant="lstm_cifg", mode=mode, B=B, I=I, H=H, T=T, dtype="float32",
                                threads=threads, impl=impl, verified=False)
    with _threads(threads):
        if impl == "onnxruntime-cifg":
            fn, collect = _onnxruntime(shape, threads, peepholes=False, input_forget=True)
        else:
            fn, collect = _fastrnn(mode, shape, False, threads, input_forget=impl == "fastrnn-cifg")
        fn()  # warm-up
        raw = benchmark(fn)
    if impl != "fastrnn-plain":  # the plain LSTM is the cost baseline
        _check(collect(raw), cifg_references(shape))
        benchmark.extra_info["verified"] = True


RDROP = 0.25


#: The recurrent-dropout cases: class, keywords and shapes ("GRU_ORIG": linear_before_reset=False;
#: the cells are stepped over a sequence from Python, a mask per sequence drawn at its first step).
RDROP_CASES = {"LSTM": (fastrnn.LSTM, {}, SHAPES), "GRU": (fastrnn.GRU, {}, SHAPES),
               "GRU_ORIG": (fastrnn.GRU, {"linear_before_reset": False}, SHAPES),
               "LSTMCell": (fastrnn.LSTMCell, {}, [(1, 64, 128, 50), (16, 64, 128, 50)]),
               "GRUCell": (fastrnn.GRUCell, {}, [(1, 64, 128, 50), (16, 64, 128, 50)])}
#: The quick subset's recurrent-dropout cases: (name, shape), on 1 thread.
RDROP_QUICK = {("LSTM", (16, 64, 128, 100)), ("LSTMCell", (16, 64, 128, 50))}


def _rdrop_module(name, I, H, dtype, p, backend=None):
    cls, kw, _ = RDROP_CASES[name]
    return cls(I, H, recurrent_dropout=p, dtype=dtype, backend=backend, seed=I * 7 + H, **kw)


def _rdrop_train(m, x, go):
    """A training pass of layer or cell ``m`` over ``x [T, B, I]`` with output gradient ``go``:
    returns (outputs, dx). A cell runs its steps forward, then their backward from the last."""
    m.zero_grad()
    if isinstance(m, (fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU)):
        out, _ = m(x)
        dx, _ = m.backward(go)
        return out, dx
    lstm = isinstance(m, fastrnn.LSTMCell)
    hx, hs = None, []  # no hx: a new sequence, a new mask
    for t in range(x.shape[0]):
        hx = m(x[t], hx)
        hs.append(hx[0] if lstm else hx)
    dh, dc, dxs = np.zeros_like(hs[0]), None, [None] * len(hs)
    for t in reversed(range(len(hs))):
        if lstm:
            dxs[t], (dh, dc) = m.backward((go[t] + dh, dc))
        else:
            dxs[t], dh = m.backward(go[t] + dh)
    return np.stack(hs), np.stack(dxs)


def _rdrop_params():
    return [_case(name, shape, threads, impl, f"{name.lower()}_rdrop-train",
                  (name, shape) in RDROP_QUICK and threads == 1)
            for name, (_, _, shapes) in RDROP_CASES.items() for shape in shapes for threads in THREADS
            for impl in ("fastrnn-rdrop", "fastrnn-plain")]


@pytest.mark.parametrize(("name", "shape", "threads", "impl"), _rdrop_params())
def test_recurrent_dropout(benchmark, name, shape, threads, impl):
    B, I, H, T = shape
    if "cpp" not in fastrnn.available_backends():
        pytest.skip("the compiled backend is not installed")
    variant = f"{name.lower()}_rdrop"
    benchmark.group = f"{variant}-train-B{B}-I{I}-H{H}-T{T}-float32-t{threads}"
    benchmark.extra_info.update(variant=variant, mode="train", B=B, I=I, H=H, T=T, dtype="float32",
                                threads=threads, impl=impl, verified=False)
    d = _data(*shape)
    x, go = d["x"].astype(np.float32), d["go"].astype(np.float32)
    m = _rdrop_module(name, I, H, np.float32, RDROP if impl == "fastrnn-rdrop" else 0.0)
    with _threads(threads):
        first = _rdrop_train(m, x, go)  # warm-up, and the answer checked below (the masks of the first draw)
        benchmark(_rdrop_train, m, x, go)
    if impl == "fastrnn-rdrop":
        out, dx = _rdrop_train(_rdrop_module(name, I, H, np.float64, RDROP, backend="numpy"), d["x"], d["go"])
        _check(dict(out=first[0], dx=first[1]), dict(out=out, dx=dx))
        benchmark.extra_info["verified"] = True


# ---------------------------------------------------------------------------
# The LSTM's projection (proj_size): fastrnn against torch.nn.LSTM(proj_size=), and against
# fastrnn's LSTM of the same hidden size without it (what the projection costs or saves)
# ---------------------------------------------------------------------------

#: (B, I, H, P, T) of the projection's cases: small batches, and the wide layers of speech models.
PROJ_SHAPES = [(1, 64, 256, 128, 100), (16, 64, 256, 128, 100), (16, 256, 512, 256, 50),
               (64, 256, 1024, 256, 25)]
PROJ_IMPLS = ("fastrnn-proj", "fastrnn-plain", "torch-proj")


def _proj_data(B, I, H, P, T):
    rng = np.random.default_rng(B * 1_000_003 + I * 1009 + H * 31 + P * 7 + T)
    return dict(x=rng.standard_normal((T, B, I)), go=rng.standard_normal((T, B, P)),
                go_plain=rng.standard_normal((T, B, H)))


def _proj_layer(I, H, P, dtype, backend=None):
    """The layer of a case, its weights U(-1/sqrt(H), 1/sqrt(H)) from a seed (torch's initialisation)."""
    return fastrnn.LSTM(I, H, proj_size=P, dtype=dtype, backend=backend, seed=I * 7 + H + P)


@pytest.fixture(scope="module")
def proj_references():
    """shape -> the float64 reference's results of the projected LSTM."""

    def make(shape):
        B, I, H, P, T = shape
        d = _proj_data(*shape)
        return _proj_layer(I, H, P, np.float64, backend="numpy"), d["x"], d["go"]

    return _cached_reference(make)


def _proj_params():
    return [_case(mode, shape, threads, impl, f"lstm_proj-{mode}", shape == (16, 64, 256, 128, 100) and threads == 1)
            for shape in PROJ_SHAPES for mode in MODES for threads in THREADS for impl in PROJ_IMPLS]


@pytest.mark.parametrize(("mode", "shape", "threads", "impl"), _proj_params())
def test_lstm_projection(benchmark, proj_references, mode, shape, threads, impl):
    B, I, H, P, T = shape
    if impl == "torch-proj" and not _installed("torch"):
        pytest.skip("PyTorch is not installed")
    if impl.startswith("fastrnn") and "cpp" not in fastrnn.available_backends():
        pytest.skip("the compiled backend is not installed")
    benchmark.group = f"lstm_proj-{mode}-B{B}-I{I}-H{H}-P{P}-T{T}-float32-t{threads}"
    benchmark.extra_info.update(variant="lstm_proj", mode=mode, B=B, I=I, H=H, P=P, T=T, dtype="float32",
                                threads=threads, impl=impl, verified=False)
    d = _proj_data(*shape)
    x = d["x"].astype(np.float32)
    go = (d["go_plain"] if impl == "fastrnn-plain" else d["go"]).astype(np.float32)
    layer = _proj_layer(I, H, P if impl != "fastrnn-plain" else 0, np.float32)
    with _threads(threads):
        if impl == "torch-proj":
            import torch

            m = torch.nn.LSTM(I, H, proj_size=P)
            m.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
            xt, got = torch.from_numpy(x), torch.from_numpy(go)
            if mode == "infer":
                def fn():
                    with torch.inference_mode():
                        return m(xt)

                def collect(r):
                    out, (h_n, c_n) = r
                    return dict(out=out.numpy(), h_n=h_n[0].numpy(), c_n=c_n[0].numpy())
            else:
                xg = xt.clone().requires_grad_()

                def fn():
                    m.zero_grad()
                    xg.grad = None
                    out, _ = m(xg)
                    out.backward(got)
                    return xg.grad

                def collect(dx):
                    return dict(dx=dx.numpy(), **{k: p.grad.numpy() for k, p in m.named_parameters()})
        else:
            fn, collect = _layer_calls(layer, mode, x, go)
        fn()  # warm-up
        raw = benchmark(fn)
    if impl != "fastrnn-plain":  # the plain LSTM computes something else: it is the cost baseline
        _check(collect(raw), proj_references(shape))
        benchmark.extra_info["verified"] = True
