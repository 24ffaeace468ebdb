"""The implementations a case runs through, all on the same data and weights.

Each implementation has:

- ``name`` (the ``impl`` of the benchmark's extra_info),
- ``applies(case)``: None, or why this implementation does not have such a case
  (ONNX Runtime has no training and no float64 RNNs) - those are not generated;
- ``unavailable(case)``: None, or why it cannot run here (not installed, too slow):
  those are skipped with the reason;
- ``threads(n)``: a context manager setting the thread count the way a user of
  that library would;
- ``prepare(case, data) -> (fn, collect)``: ``fn()`` is the timed call,
  ``collect(fn())`` turns its return value into ``{name: numpy array}`` for the
  check against the reference (outside the timing).

Train = forward + backward of ``out.sum()`` w.r.t. the input and all
parameters (seed workload: of the MSE loss of a linear head); infer = forward
with nothing kept for backward.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np

from cases import Case, param_names

ONNX_GATE_ORDER = {
    "LSTM": [0, 3, 1, 2],  # PyTorch i,f,g,o -> ONNX i,o,f,c
    "GRU": [1, 0, 2],  # PyTorch r,z,n -> ONNX z,r,h
    "RNN": [0],
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _blas_threads(n):
    """Limit every native thread pool (NumPy/SciPy BLAS, OpenMP) to n, as threadpoolctl users do."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield


class Impl:
    name = "?"

    def applies(self, case: Case) -> str | None:
        return None

    def unavailable(self, case: Case) -> str | None:
        return None

    def threads(self, n):
        return _blas_threads(n)

    def prepare(self, case: Case, data: dict):
        raise NotImplementedError


# ----------------------------------------------------------------------------
# fastrnn, one implementation per backend
# ----------------------------------------------------------------------------


class FastrnnImpl(Impl):
    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"fastrnn-{backend}"

    def unavailable(self, case):
        import fastrnn.backends

        if self.backend not in fastrnn.available_backends():
            reason = fastrnn.backends.unavailable_backends().get(self.backend, "not importable")
            return f"fastrnn backend {self.backend!r} is not available: {reason}"
        if self.backend == "numpy":
            # The NumPy reference is the specification, not a fast path: it is kept in
            # the small cases so the table shows it, and skipped where one round takes
            # more than ~0.25 s: H >= 512 training, H >= 1024 inference, and the seed
            # workload (T = 999).
            if case.kind == "seed" or case.T >= 999:
                return "NumPy reference skipped: too slow at T=999 (seed workload)"
            if case.H >= 1024 or (case.H >= 512 and case.mode == "train"):
                return f"NumPy reference skipped: too slow at H={case.H} {case.mode}"
        return None

    @contextlib.contextmanager
    def threads(self, n):
        import fastrnn

        prev = fastrnn.get_num_threads()
        fastrnn.set_num_threads(n)
        try:
            # A backend whose kernels have their own pool leaves BLAS only the seed workload's head: one
            # thread, as fastrnn.train.fit runs it (idle OpenBLAS workers would spin on the kernels' cores).
            with _blas_threads(n if fastrnn.get_backend(self.backend).PRODUCTS_IN_BLAS else 1):
                yield
        finally:
            fastrnn.set_num_threads(prev)

    def prepare(self, case, data):
        import fastrnn

        dt = np.dtype(case.dtype)
        kw = dict(dtype=dt, backend=self.backend)
        if case.kind == "cell":
            cls = {"LSTM": fastrnn.LSTMCell, "GRU": fastrnn.GRUCell, "RNN": fastrnn.RNNCell}[case.cell]
            m = cls(case.I, case.H, **kw)
        else:
            cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN": fastrnn.RNN}[case.cell]
            m = cls(case.I, case.H, num_layers=case.layers, **kw)
        m.load_state_dict(data["params"])
        names = param_names(case)
        lstm = case.cell == "LSTM"
        x = data["x"]

        def grads():
            return {"grad:" + k: m.grads[k].copy() for k in names}

        if case.kind == "cell":
            hx = (data["h0"], data["c0"]) if lstm else data["h0"]
            if case.mode == "infer":
                def fn():
                    with fastrnn.no_grad():
                        return m(x, hx)
            else:
                ones = np.ones((case.B, case.H), dt)

                def fn():
                    m.zero_grad()
                    out = m(x, hx)
                    return out, m.backward((ones, None) if lstm else ones)

            def collect(r):
                out = r if case.mode == "infer" else r[0]
                res = {"h": out[0], "c": out[1]} if lstm else {"h": out}
                if case.mode == "train":
                    dx, dh = r[1]
                    res.update(dx=dx, **({"dh": dh[0], "dc": dh[1]} if lstm else {"dh": dh}))
                    res.update(grads())
                return res

            return fn, collect

        if case.kind == "seed":
            W, b, target = data["head_weight"], data["head_bias"], data["target"]
            H = case.H

            def fn():
                m.zero_grad()
                out, _ = m(x)  # [T, B, H]
                y = out @ W.T + b  # [T, B, 1]
                diff = y - target
                loss = np.mean(diff * diff)
                dy = diff * dt.type(2.0 / diff.size)
                flat_dy = dy.reshape(-1, 1)
                g_w = flat_dy.T @ out.reshape(-1, H)
                g_b = flat_dy.sum(axis=0)
                m.backward(dy @ W)
                return loss, g_w, g_b

            def collect(r):
                res = {"loss": np.asarray(r[0]), "grad:head.weight": r[1], "grad:head.bias": r[2]}
                res.update(grads())
                return res

            return fn, collect

        lengths = data["lengths"]
        if case.mode == "infer":
            def fn():
                with fastrnn.no_grad():
                    return m(x, lengths=lengths)
        else:
            ones = np.ones((case.T, case.B, case.H), dt)

            def fn():
                m.zero_grad()
                out, hn = m(x, lengths=lengths)
                dx, _ = m.backward(ones)
                return out, hn, dx

        def collect(r):
            out, hn = r[0], r[1]
            # h_n: [layers, B, H]; the last layer's final state, as for PyTorch
            res = {"out": out, "h_n": hn[0][-1], "c_n": hn[1][-1]} if lstm else {"out": out, "h_n": hn[-1]}
            if case.mode == "train":
                res["dx"] = r[2]
                res.update(grads())
            return res

        return fn, collect


# ----------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------


class TorchImpl(Impl):
    name = "torch"

    def unavailable(self, case):
        return None if _installed("torch") else "PyTorch is not installed"

    @contextlib.contextmanager
    def threads(self, n):
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            with _blas_threads(n):
                yield
        finally:
            torch.set_num_threads(prev)

    def modules(self):
        """Where the recurrent module classes come from (LSTM, GRU, RNN and their cells)."""
        from torch import nn

        return nn

    def prepare(self, case, data):
        import torch
        from torch import nn

        tdt = {"float32": torch.float32, "float64": torch.float64}[case.dtype]

        def T(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        mods = self.modules()
        if case.kind == "cell":
            m = getattr(mods, case.cell + "Cell")(case.I, case.H, dtype=tdt)
        else:
            m = getattr(mods, case.cell)(case.I, case.H, num_layers=case.layers, dtype=tdt)
        m.load_state_dict({k: T(v) for k, v in data["params"].items()})
        lstm = case.cell == "LSTM"
        train = case.mode == "train"
        x = T(data["x"]).requires_grad_(train and case.kind != "seed")
        params = dict(m.named_parameters())

        def grads():
            return {"grad:" + k: p.grad.numpy().copy() for k, p in params.items()}

        if case.kind == "cell":
            h0 = T(data["h0"]).requires_grad_(train)
            c0 = T(data["c0"]).requires_grad_(train) if lstm else None
            hx = (h0, c0) if lstm else h0
            if not train:
                def fn():
                    with torch.no_grad():
                        return m(x, hx)
            else:
                leaves = [x, h0] + ([c0] if lstm else [])

                def fn():
                    for t in leaves:
                        t.grad = None
                    m.zero_grad(set_to_none=True)
                    out = m(x, hx)
                    (out[0] if lstm else out).sum().backward()
                    return out

            def collect(out):
                res = {"h": out[0].detach().numpy(), "c": out[1].detach().numpy()} if lstm else {"h": out.detach().numpy()}
                if train:
                    res.update(dx=x.grad.numpy(), dh=h0.grad.numpy())
                    if lstm:
                        res["dc"] = c0.grad.numpy()
                    res.update(grads())
                return res

            return fn, collect

        if case.kind == "seed":
            head = nn.Linear(case.H, 1, dtype=tdt)
            head.load_state_dict({"weight": T(data["head_weight"]), "bias": T(data["head_bias"])})
            target = T(data["target"])
            mse = nn.MSELoss()

            def fn():
                m.zero_grad(set_to_none=True)
                head.zero_grad(set_to_none=True)
                out, _ = m(x)
                loss = mse(head(out), target)
                loss.backward()
                return loss

            def collect(loss):
                res = {"loss": loss.detach().numpy(), "grad:head.weight": head.weight.grad.numpy(),
                       "grad:head.bias": head.bias.grad.numpy()}
                res.update(grads())
                return res

            return fn, collect

        if case.kind == "varlen":
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            lengths = torch.from_numpy(data["lengths"])
            Tn = case.T

            def forward():
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                out, hn = m(packed)
                return pad_packed_sequence(out, total_length=Tn)[0], hn
        else:
            def forward():
                return m(x)

        if not train:
            def fn():
                with torch.no_grad():
                    return forward()
        else:
            def fn():
                x.grad = None
                m.zero_grad(set_to_none=True)
                out, hn = forward()
                out.sum().backward()
                return out, hn

        def collect(r):
            out, hn = r
            res = {"out": out.detach().numpy()}
            if lstm:
                res.update(h_n=hn[0].detach().numpy()[-1], c_n=hn[1].detach().numpy()[-1])
            else:
                res["h_n"] = hn.detach().numpy()[-1]
            if train:
                res["dx"] = x.grad.numpy()
                res.update(grads())
            return res

        return fn, collect


class FastrnnTorchImpl(TorchImpl):
    """fastrnn inside PyTorch: the same code as :class:`TorchImpl` with fastrnn.torch's modules
    (torch.nn's interface, fastrnn's kernels; fastrnn's threads follow torch.set_num_threads)."""

    name = "fastrnn.torch"

    def unavailable(self, case):
        if not _installed("torch"):
            return "PyTorch is not installed"
        try:
            import fastrnn.torch  # noqa: F401
        except ImportError as exc:
            return f"fastrnn.torch does not import: {exc}"
        return None

    def modules(self):
        import fastrnn.torch

        return fastrnn.torch


# ----------------------------------------------------------------------------
# ONNX Runtime (inference only, float32 only)
# ----------------------------------------------------------------------------


def onnx_model(case: Case, params: dict, *, with_state: bool, with_lengths: bool):
    """An in-memory ONNX model with one LSTM/GRU/RNN operator; weights as initializers.

    ``params`` in PyTorch layout and gate order; they are reordered to ONNX's
    (LSTM i,o,f,c; GRU z,r,h) and the GRU uses linear_before_reset=1 (PyTorch's form).
    Inputs: X [T, B, I], optional sequence_lens [B] int32, optional initial_h
    (and initial_c) [1, B, H]. Outputs Y [T, 1, B, H], Y_h (and Y_c) [1, B, H].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, I, B, T = case.H, case.I, case.B, case.T
    G = case.G
    sfx = "" if case.kind == "cell" else "_l0"
    order = ONNX_GATE_ORDER[case.cell]

    def reorder(a):
        blocks = np.split(np.asarray(a, dtype=np.float32), G, axis=0)
        return np.concatenate([blocks[j] for j in order], axis=0)

    W = reorder(params["weight_ih" + sfx])[None]
    R = reorder(params["weight_hh" + sfx])[None]
    Bias = np.concatenate([reorder(params["bias_ih" + sfx]), reorder(params["bias_hh" + sfx])])[None]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(Bias, "B")]
    lstm = case.cell == "LSTM"
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])]
    node_in = ["X", "W", "R", "B", "", ""]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
        node_in[4] = "sequence_lens"
    if with_state:
        inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, B, H]))
        node_in[5] = "initial_h"
        if lstm:
            inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, B, H]))
            node_in.append("initial_c")
    while node_in[-1] == "":
        node_in.pop()
    out_names = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B, H]) for n in out_names[1:]
    ]
    attrs = {"hidden_size": H, "direction": "forward"}
    if case.cell == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(case.cell, node_in, out_names, **attrs)
    graph = helper.make_graph([node], f"fastrnn_bench_{case.cell}", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class OrtImpl(Impl):
    name = "onnxruntime"

    def applies(self, case):
        if case.mode != "infer" or case.kind == "seed":
            return "ONNX Runtime has no training"
        if case.dtype != "float32":
            return "ONNX Runtime's RNN operators are float32 only"
        return None

    def unavailable(self, case):
        if not (_installed("onnxruntime") and _installed("onnx")):
            return "onnx / onnxruntime are not installed"
        return None

    def prepare(self, case, data):
        import onnxruntime as ort

        model = onnx_model(case, data["params"], with_state=case.kind == "cell", with_lengths=case.kind == "varlen")
        so = ort.SessionOptions()
        so.intra_op_num_threads = case.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        lstm = case.cell == "LSTM"
        if case.kind == "cell":
            feeds = {"X": data["x"][None], "initial_h": data["h0"][None]}
            if lstm:
                feeds["initial_c"] = data["c0"][None]
        else:
            feeds = {"X": data["x"]}
        if case.kind == "varlen":
            feeds["sequence_lens"] = data["lengths"].astype(np.int32)
        names = [o.name for o in sess.get_outputs()]

        def fn():
            return sess.run(names, feeds)

        def collect(r):
            got = dict(zip(names, r))
            if case.kind == "cell":
                res = {"h": got["Y_h"][0]}
                if lstm:
                    res["c"] = got["Y_c"][0]
                return res
            res = {"out": got["Y"][:, 0], "h_n": got["Y_h"][0]}
            if lstm:
                res["c_n"] = got["Y_c"][0]
            return res

        return fn, collect


# ----------------------------------------------------------------------------
# The GEMM roofline
# ----------------------------------------------------------------------------


class GemmImpl(Impl):
    """NumPy matmul [M, K] x [K, N] at the case's gemm_shape(), same dtype and threads."""

    name = "gemm-roofline"

    def prepare(self, case, data):
        M, K, N = case.gemm_shape()
        rng = np.random.default_rng(M * 7919 + K * 31 + N)
        dt = np.dtype(case.dtype)
        a = rng.uniform(-1, 1, size=(M, K)).astype(dt)
        b = rng.uniform(-1, 1, size=(K, N)).astype(dt)
        c = np.empty((M, N), dt)

        def fn():
            return np.matmul(a, b, out=c)

        def collect(r):
            return {"c": r.copy()}

        fn.reference = lambda: {"c": a.astype(np.float64) @ b.astype(np.float64)}
        return fn, collect


def implementations() -> list[Impl]:
    """Every fastrnn backend fastrnn knows of (missing ones are skipped), then the peers."""
    from fastrnn.backends import PREFERENCE

    return [FastrnnImpl(name) for name in PREFERENCE] + [FastrnnTorchImpl(), TorchImpl(), OrtImpl()]
