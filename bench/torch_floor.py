"""The floor of the time-sequence model's own PyTorch work (not a pytest benchmark).

The example's model (bench/test_bench_torch_e2e.py) with its two cells replaced by
autograd Functions that do no arithmetic (zero states of the right shape, zero gradients):
what a training step costs with infinitely fast cell kernels. Printed beside the
unchanged model and fastrnn.torch.convert(model): CPU time per training step (zero_grad,
forward, loss, backward) at 1 thread, median of N rounds, the three alternating.

    python bench/torch_floor.py [N]
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import bench.test_bench_torch_e2e as e2e  # noqa: E402


class NullCellFn(torch.autograd.Function):
    """A cell step without arithmetic: ``apply(n_states, *states, x, *weights)`` returns zero
    states of the inputs' shapes, and zero gradients for every input."""

    @staticmethod
    def forward(ctx, n_states, *args):
        ctx.shapes = [a.shape for a in args]
        states = tuple(s.new_zeros(s.shape) for s in args[:n_states])
        return states if n_states > 1 else states[0]

    @staticmethod
    def backward(ctx, *grads):
        return (None, *[grads[0].new_zeros(s) for s in ctx.shapes])


class NullLSTMCell(nn.LSTMCell):
    def forward(self, x, hx):
        return NullCellFn.apply(2, hx[0], hx[1], x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class NullGRUCell(nn.GRUCell):
    def forward(self, x, h):
        return NullCellFn.apply(1, h, x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


def null_model(cell):
    torch.manual_seed(0)
    m = e2e.Sequence(cell).double()
    for name in ("lstm1", "lstm2"):  # the same modules and weights, stepping without arithmetic
        getattr(m, name).__class__ = NullLSTMCell if cell == "LSTM" else NullGRUCell
    return m


def cpu_step(model, inp, target):
    """CPU time of one training step after a warm-up step."""
    closure = e2e._closure(model, inp, target)
    closure()
    t0 = time.process_time()
    closure()
    return time.process_time() - t0


def main():
    torch.set_num_threads(1)  # fastrnn.torch's kernels follow it
    inp, target = e2e._waves()
    print(f"CPU time per training step, 1 thread; load average {os.getloadavg()}")
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
