"""Learn sine waves and forecast them with a PyTorch model whose LSTM is fastrnn's (``fastrnn.torch``).

PyTorch's "time sequence prediction" example, written against ``fastrnn.torch``: waves
``sin((t + shift) / 20)`` with a random shift per wave (``fastrnn.data.make_sine_data``, the
data of ``fastrnn sine``; the first 3 waves are the test set). The model is a ``torch.nn.Module``:
``fastrnn.torch.LSTM(1, 51, num_layers=2)`` and a ``torch.nn.Linear(51, 1)`` head, in float64,
as the original's two ``LSTMCell``s of 51 units, but the whole sequence goes through fastrnn's
kernels in one custom op call, forward and backward. ``torch.optim.LBFGS`` (lr 0.8, as the
original) minimises the next-sample MSE over all training waves, one optimizer step an epoch.

After reading each test wave, the model forecasts ``--future`` samples by feeding its own
output back, one step at a time (the LSTM called with its state), and is scored against the
noiseless continuation: the MSE over the first period (about 126 samples) and over all of it.

Run ``python examples/sine_torch.py --out DIR`` (``--quick`` for a short run); it prints the
errors and writes ``sine_torch.png`` (the test waves and their forecasts) and ``metrics.json``.
The original's size is ``--waves 100 --length 1000 --epochs 15`` (a few minutes).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn

import fastrnn.torch
from fastrnn.data import make_sine_data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py beside this file
from _common import parse_args, pyplot, save

N_TEST = 3
DEFAULT = {"waves": 18, "length": 400}
QUICK = {"waves": 12, "length": 300}


class SineModel(nn.Module):
    """fastrnn's LSTM and a linear head: the next sample at every step."""

    def __init__(self, hidden=51, layers=2):
        super().__init__()
        self.lstm = fastrnn.torch.LSTM(1, hidden, num_layers=layers, dtype=torch.float64)
        self.head = nn.Linear(hidden, 1, dtype=torch.float64)

    def forward(self, x, state=None):
        out, state = self.lstm(x, state)
        return self.head(out), state

    @torch.no_grad()
    def forecast(self, warmup, steps):
        """``steps`` samples after ``warmup [T, B, 1]``, each from the model's previous output."""
        y, state = self(warmup)
        step = y[-1:]
        out = [step]
        for _ in range(steps - 1):
            step, state = self(step, state)
            out.append(step)
        return torch.cat(out)


def train(model, x, y, epochs):
    """``epochs`` steps of ``torch.optim.LBFGS`` on the next-sample MSE; returns the loss before each."""
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.8)
    curve = []

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x)[0], y)
        loss.backward()
        return loss

    for _ in range(epochs):
        curve.append(optimizer.step(closure).detach().item())
    return curve


def add_arguments(parser):
    parser.add_argument("--waves", type=int, default=None, help=f"sine waves, the first {N_TEST} the test set "
                        f"(default {DEFAULT['waves']}; --quick: {QUICK['waves']})")
    parser.add_argument("--length", type=int, default=None, help=f"samples per wave (default {DEFAULT['length']}; "
                        f"--quick: {QUICK['length']})")
    parser.add_argument("--future", type=int, default=500, help="samples to forecast after each test wave")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (fastrnn.torch's kernels use as many); default: PyTorch's. "
                             "On a busy machine 1 can be much faster: L-BFGS's many small dot products wake "
                             "PyTorch's OpenMP team each time")


def main(argv=None):
    args = parse_args(__doc__, "sine_torch", epochs=10, quick_epochs=5, argv=argv, add_arguments=add_arguments)
    defaults = QUICK if args.quick else DEFAULT
    args.waves = args.waves or defaults["waves"]
    args.length = args.length or defaults["length"]

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    data = make_sine_data(args.waves, args.length, n_test=N_TEST, seed=args.seed)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in (data.x_train, data.y_train, data.x_test,
                                                                      data.y_test))
    model = SineModel()
    curve = train(model, x_train, y_train, args.epochs)
    with torch.no_grad():
        test_mse = float(nn.functional.mse_loss(model(x_test)[0], y_test))
    pred = model.forecast(x_test, args.future).numpy()
    truth = data.continuation(args.length - 1, args.future)  # what follows the test inputs, without noise
    n_period = min(args.future, int(round(float(np.mean(data.period)))))
    err = (pred - truth) ** 2
    metrics = {"threads": torch.get_num_threads(), "waves": args.waves, "length": args.length, "future": args.future, "epochs": args.epochs,
               "train_loss": curve, "test_mse": test_mse, "forecast_mse_period": float(err[:n_period].mean()),
               "forecast_period_samples": n_period, "forecast_mse": float(err.mean()),
               "seconds": time.perf_counter() - t0}

    print(f"sine waves: {args.waves - N_TEST} x {args.length} samples to train, {N_TEST} to test; "
          f"fastrnn.torch.LSTM(1, 51, num_layers=2) + nn.Linear(51, 1), float64, L-BFGS x {args.epochs}")
    print(f"training loss {curve[0]:.3g} -> {curve[-1]:.3g}; next-sample test MSE {test_mse:.3g}")
    print(f"forecast MSE: first period ({n_period} samples) {metrics['forecast_mse_period']:.3g}, "
          f"all {args.future} samples {metrics['forecast_mse']:.3g}")
    print(f"{metrics['seconds']:.1f} s")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    seen = np.arange(args.length - 1)
    ahead = np.arange(args.length - 1, args.length - 1 + args.future)
    for i, color in zip(range(N_TEST), ("tab:red", "tab:green", "tab:blue")):
        ax.plot(seen, data.x_test[:, i, 0], color=color, lw=1.5)
        ax.plot(ahead, truth[:, i, 0], color=color, lw=0.8, alpha=0.5)
        ax.plot(ahead, pred[:, i, 0], color=color, lw=1.5, ls=":")
    ax.axvline(args.length - 1.5, color="grey", lw=0.8)
    ax.set_xlabel("sample")
    ax.set_title(f"test waves (solid), forecasts (dotted) and the true continuation (thin); "
                 f"forecast MSE {metrics['forecast_mse']:.2g}", fontsize=9)
    return save(args.out, "sine_torch", fig, metrics)


if __name__ == "__main__":
    main()
