"""The floor of the time-sequence model's own PyTorch work (not a pytest benchmark).

The example's model (bench/test_bench_torch_e2e.py) with its two cells replaced by
autograd Functions that do no arithmetic (outputs of the right shape, zero gradients):
what a training step costs with infinitely fast cell kernels. Printed beside the
unchanged model and fastrnn.torch.convert(model): CPU time per training step (zero_grad,
forward, loss, backward) at 1 thread, median of N rounds, the three alternating.

    python bench/torch_floor.py [N]
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import bench.test_bench_torch_e2e as e2e  # noqa: E402

torch.set_num_threads(1)
H = e2e.H


class NullCellFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, c, *w):
        ctx.shapes = (x.shape, h.shape, c.shape, [t.shape for t in w])
        return h.new_empty(h.shape), c.new_empty(c.shape)
    @staticmethod
    def backward(ctx, gh, gc):
        xs, hs, cs, ws = ctx.shapes
        return (gh.new_zeros(xs), gh.new_zeros(hs), gh.new_zeros(cs), *[gh.new_zeros(s) for s in ws])


class NullGRUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, *w):
        ctx.shapes = (x.shape, h.shape, [t.shape for t in w])
        return h.new_empty(h.shape)
    @staticmethod
    def backward(ctx, gh):
        xs, hs, ws = ctx.shapes
        return (gh.new_zeros(xs), gh.new_zeros(hs), *[gh.new_zeros(s) for s in ws])


class NullLSTMCell(nn.LSTMCell):
    def forward(self, x, hx):
        return NullCellFn.apply(x, hx[0], hx[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class NullGRUCell(nn.GRUCell):
    def forward(self, x, h):
        return NullGRUFn.apply(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


def null_model(cell):
    torch.manual_seed(0)
    m = e2e.Sequence(cell).double()
    cls = NullLSTMCell if cell == "LSTM" else NullGRUCell
    for name in ("lstm1", "lstm2"):
        old = getattr(m, name)
        new = cls(old.input_size, old.hidden_size).double()
        new.load_state_dict(old.state_dict())
        setattr(m, name, new)
    return m


def cpu_step(model, inp, target):
    """CPU time of one training step after a warm-up step."""
    closure = e2e._closure(model, inp, target)
    closure()
    t0 = time.process_time()
    closure()
    return time.process_time() - t0


def main():
    inp, target = e2e._waves()
    print(f"CPU time per training step, 1 thread; load average {open('/proc/loadavg').read().split()[:3]}")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for cell in ("LSTM", "GRU"):
        models = {"torch.nn": e2e._model(cell, "torch"), "fastrnn.torch": e2e._model(cell, "fastrnn.torch"),
                  "null cells": null_model(cell)}
        res = {k: [] for k in models}
        for _ in range(n):
            for k, m in models.items():
                res[k].append(cpu_step(m, inp, target))
        med = {k: statistics.median(v) for k, v in res.items()}
        print(cell, {k: f"{v*1e3:.0f} ms (spread {min(res[k])*1e3:.0f}-{max(res[k])*1e3:.0f})" for k, v in med.items()})
        print(f"  torch.nn / fastrnn.torch = {med['torch.nn']/med['fastrnn.torch']:.2f}x; "
              f"torch.nn / null-cell floor = {med['torch.nn']/med['null cells']:.2f}x (the most any cell kernel can give)")


if __name__ == "__main__":
    main()
