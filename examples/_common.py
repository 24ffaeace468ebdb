"""What the examples share: their command line, the mini-batch training loop, and their outputs.

Each example is a script with ``main(argv)`` that trains a model, prints its figures and writes a
plot and ``metrics.json`` into ``--out``; ``--quick`` is the short run the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def parse_args(doc: str, name: str, epochs: int, quick_epochs: int, argv: Sequence[str] | None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The example's arguments (``--out``, ``--epochs``, ``--seed``, ``--quick`` and its own ones);
    ``args.epochs`` is ``quick_epochs`` under ``--quick``; the output directory exists afterwards."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", default=f"{name}-out", help=f"directory for {name}.png and metrics.json")
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the initialisation and the batches")
    parser.add_argument("--quick", action="store_true", help=f"a short run ({quick_epochs} epochs), as the tests use")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = quick_epochs
    os.makedirs(args.out, exist_ok=True)
    return args


def train_minibatches(step: Callable[[np.ndarray], float], n: int, epochs: int, batch_size: int,
                      seed: int = 0) -> list[float]:
    """``epochs`` passes over ``n`` samples in shuffled mini-batches of about ``batch_size``:
    ``step(indices)`` trains on one batch and returns its loss. Returns each epoch's mean loss."""
    rng = np.random.default_rng(seed)
    curve = []
    for _ in range(epochs):
        losses = [step(idx) for idx in np.array_split(rng.permutation(n), max(1, n // batch_size))]
        curve.append(float(np.mean(losses)))
    return curve


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(out: str, name: str, fig: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``fig`` as ``<out>/<name>.png`` and ``metrics`` as ``<out>/metrics.json``; returns ``metrics``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=110)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
