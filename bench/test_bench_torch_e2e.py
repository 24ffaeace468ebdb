"""End to end inside PyTorch: the time-sequence-prediction model, unchanged vs fastrnn.torch.convert().

PyTorch's classic example (pytorch/examples, time_sequence_prediction): two
``LSTMCell(…, 51)`` stepped over 999 samples of 97 sine waves, a linear head,
float64, MSE loss, L-BFGS. The same model with ``GRUCell``s is the second case.
``torch`` runs the model as written; ``fastrnn.torch`` runs
``fastrnn.torch.convert(model)`` - the one-line swap - on the same data and weights.

- ``test_time_sequence_step``: one training step (zero_grad, forward, loss,
  backward: what L-BFGS's closure does), its loss and every gradient checked
  against the unchanged float64 model;
- ``test_time_sequence_lbfgs`` (full grid only): 5 L-BFGS steps (``lr=0.8``, as in the
  example), timed once, the loss after each step within 1e-8 (relative) of the
  unchanged model's.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

ft = pytest.importorskip("fastrnn.torch")  # an installed fastrnn older than fastrnn.torch: skipped

B, T, H = 97, 999, 51
THREADS = (1, 2)
LBFGS_STEPS = 5
GATES = {"LSTM": 4, "GRU": 3}


class Sequence(nn.Module):
    """The example's model, with the cell kind as a parameter."""

    def __init__(self, cell="LSTM"):
        super().__init__()
        cls = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}[cell]
        self.lstm = cell == "LSTM"
        self.lstm1 = cls(1, H)
        self.lstm2 = cls(H, H)
        self.linear = nn.Linear(H, 1)

    def forward(self, input):  # noqa: A002 - the example's name
        outputs = []
        h_t = torch.zeros(input.size(0), H, dtype=torch.double)
        c_t = torch.zeros(input.size(0), H, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), H, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), H, dtype=torch.double)
        for input_t in input.split(1, dim=1):
            if self.lstm:
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            else:
                h_t = self.lstm1(input_t, h_t)
                h_t2 = self.lstm2(h_t, h_t2)
            outputs.append(self.linear(h_t2))
        return torch.cat(outputs, dim=1)


@functools.lru_cache(maxsize=1)
def _waves():
    """The example's data: 100 sine waves of 1000 samples with random shifts; 97 train."""
    rng = np.random.default_rng(2)
    x = np.arange(T + 1)[None, :] + rng.integers(-4 * 20, 4 * 20, size=(100, 1))
    data = np.sin(x / 20.0)
    return torch.from_numpy(data[3:, :-1].copy()), torch.from_numpy(data[3:, 1:].copy())


def _model(cell, impl):
    torch.manual_seed(0)
    model = Sequence(cell).double()
    return ft.convert(model) if impl == "fastrnn.torch" else model


def _closure(model, inp, target):
    def closure():
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(inp), target)
        loss.backward()
        return loss
    return closure


@functools.lru_cache(maxsize=2)
def _reference(cell):
    """Loss and gradients of one step of the unchanged float64 model."""
    model = _model(cell, "torch")
    loss = _closure(model, *_waves())()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def _info(benchmark, cell, impl, threads, what):
    G = GATES[cell]
    fwd = 2 * B * T * G * H * ((1 + H) + (H + H))  # two cells per step; the head is not counted
    benchmark.group = f"{cell}Cell/train/e2e-time-sequence-{what}-B{B}-H{H}-T{T}/float64/{threads}t"
    benchmark.extra_info.update(case=f"e2e-{what}", cell=f"{cell}Cell", mode="train", B=B, I=1, H=H, T=T, layers=2,
                                dtype="float64", threads=threads, flops=3 * fwd if what == "step" else None,
                                impl=impl, verified=False)


def _params(quick_ids):
    out = []
    for cell in GATES:
        for threads in THREADS:
            for impl in ("torch", "fastrnn.torch"):  # torch first: its L-BFGS curve is the reference
                marks = [pytest.mark.bench_quick] if (cell, threads) in quick_ids else []
                out.append(pytest.param(cell, impl, threads, id=f"{cell}Cell-{threads}t-{impl}", marks=marks))
    return out


@pytest.mark.parametrize(("cell", "impl", "threads"), _params({("LSTM", 1), ("GRU", 1)}))
def test_time_sequence_step(benchmark, cell, impl, threads):
    _info(benchmark, cell, impl, threads, "step")
    inp, target = _waves()
    ref_loss, ref_grads = _reference(cell)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)  # fastrnn.torch's kernels follow PyTorch's thread count
    try:
        model = _model(cell, impl)
        closure = _closure(model, inp, target)
        closure()  # warm-up
        loss = benchmark(closure)
    finally:
        torch.set_num_threads(prev)
    loss = float(loss.detach())
    assert abs(loss - ref_loss) <= 1e-9 * abs(ref_loss)
    for n, p in model.named_parameters():
        g = ref_grads[n]
        err = float((p.grad - g).abs().max()) / max(float(g.abs().max()), 1e-30)
        assert err <= 1e-9, f"grad of {n} differs by {err:.3g} (relative to max)"
    benchmark.extra_info.update(verified=True, loss=loss)


_CURVES: dict = {}  # (cell, threads) -> the unchanged model's loss curve, computed once


@pytest.mark.parametrize(("cell", "impl", "threads"), _params(set()))
def test_time_sequence_lbfgs(benchmark, cell, impl, threads):
    """5 L-BFGS steps, timed once; the loss curve equals the unchanged model's."""
    _info(benchmark, cell, impl, threads, "lbfgs5")
    inp, target = _waves()

    def runner(which):
        model = _model(cell, which)
        opt = torch.optim.LBFGS(model.parameters(), lr=0.8)
        closure = _closure(model, inp, target)
        return lambda: [float(opt.step(closure).detach()) for _ in range(LBFGS_STEPS)]

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = benchmark.pedantic(runner(impl), rounds=1, iterations=1)
        if impl == "torch":
            _CURVES[(cell, threads)] = got
        elif (cell, threads) not in _CURVES:
            _CURVES[(cell, threads)] = runner("torch")()
    finally:
        torch.set_num_threads(prev)
    want, got = np.array(_CURVES[(cell, threads)]), np.array(got)
    assert np.all(np.abs(got - want) <= 1e-8 * np.abs(want)), f"loss curves differ: {got} vs {want}"
    benchmark.extra_info.update(verified=True, losses=got.tolist())
