"""``fastrnn sine``: the classic sine-wave prediction exercise, end to end.

With its defaults this reproduces PyTorch's "time sequence prediction"
example: 100 sine waves of 1000 samples (``sin((t + shift) / 20)``, float64),
a 2-layer LSTM of 51 units with a linear head, next-sample MSE, trained on
waves 3..99 with L-BFGS, tested on waves 0..2, then a 1000-sample
autoregressive forecast. Training starts with a curriculum (--curriculum):
epochs on cheaper sub-problems (the first 250 samples of 32 training waves,
then the whole length of those 32 waves) whose result is the starting point
of the epochs on the whole training set, which reaches the example's
forecast quality in a fraction of its forward + backward passes;
--curriculum none trains on the whole set throughout (as the example, with
--epochs 15). It prints the loss of every epoch, the final next-step test
MSE, the forecast MSE over one period and over the whole horizon, and the
time per epoch; it writes ``forecast.png``, ``loss.png`` and
``metrics.json`` into ``--out``.

The forecast is scored against the true sine: each test wave warms the model
up on its first ``length - 1`` samples (the test input), and the forecast of
the next ``--future`` samples is compared with the noiseless wave there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .._optional import require

__all__ = ["add_parser", "run"]

DEFAULT_LR = {"adam": 1e-2, "sgd": 5e-2}


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _finite_float(text: str, ok: Callable[[float], bool], requirement: str) -> float:
    """``text`` as a finite float for which ``ok`` holds, else an argparse error saying ``requirement``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, lambda v: v > 0, "a positive finite number")


#: The fewest samples per cycle a sampled sine can have (Nyquist); the forecast is scored over one period.
MIN_PERIOD = 2.0


def _period(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_PERIOD:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_PERIOD:g} samples per cycle, got {text}")
    return value


def _nonneg_float(text: str) -> float:
    return _finite_float(text, lambda v: v >= 0, "a finite number >= 0")


#: Stages of the default curriculum: (input samples per wave, training waves, epochs); "all" is the whole axis.
DEFAULT_CURRICULUM = "250:32:8,all:32:3"


def _curriculum(text: str) -> list[tuple[int | None, int | None, int]]:
    """``--curriculum``: "none", or stages ``SAMPLES:WAVES:EPOCHS`` separated by commas (None: "all")."""
    if text.strip().lower() == "none":
        return []
    stages: list[tuple[int | None, int | None, int]] = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise argparse.ArgumentTypeError(f"expected 'none' or stages SAMPLES:WAVES:EPOCHS separated by commas, "
                                             f"got {part.strip()!r}")
        values: list[int | None] = []
        for name, field in zip(("SAMPLES", "WAVES", "EPOCHS"), fields):
            if field.strip().lower() == "all" and name != "EPOCHS":
                values.append(None)
                continue
            try:
                value = int(field)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{name} must be an integer" + (" or 'all'" if name != "EPOCHS" else "")
                                                 + f", got {field.strip()!r} in {part.strip()!r}") from None
            if value < 1:
                raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {value} in {part.strip()!r}")
            values.append(value)
        stages.append((values[0], values[1], cast(int, values[2])))
    return stages


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's paragraphs; shows defaults except None/False (explained in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _description() -> str:
    paragraphs = __doc__.replace("``", "").split("\n\n")[1:]
    return "\n\n".join(paragraphs).strip()


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the ``sine`` subcommand on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "sine",
        help="train a recurrent model on sine waves and forecast them",
        description=_description(),
        formatter_class=_HelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm", help="recurrent cell (rnn = tanh Elman)")
    m.add_argument("--hidden", type=_int_at_least(1), default=51, help="hidden units per layer")
    m.add_argument("--layers", type=_int_at_least(1), default=2, help="stacked recurrent layers")
    t = p.add_argument_group("training")
    t.add_argument("--optimizer", choices=["lbfgs", "adam", "sgd"], default="lbfgs",
                   help="lbfgs: one SciPy L-BFGS-B run that keeps its curvature history, an epoch being 20 of its "
                        "iterations with a budget of 25 loss evaluations (as a step of torch.optim.LBFGS); "
                        "adam, sgd (momentum 0.9): one full-batch step per epoch")
    t.add_argument("--epochs", type=_int_at_least(1), default=2,
                   help="training epochs on the whole training set, after the curriculum (L-BFGS: optimizer steps)")
    t.add_argument("--curriculum", type=_curriculum, default=DEFAULT_CURRICULUM, metavar="STAGES",
                   help="epochs before --epochs on sub-problems: comma-separated SAMPLES:WAVES:EPOCHS, each stage "
                        "training on the first SAMPLES inputs of the first WAVES training waves ('all': the whole "
                        "axis) for EPOCHS epochs, or 'none'; a stage as large as the whole set is skipped")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help=f"learning rate for adam/sgd (default {DEFAULT_LR['adam']} / {DEFAULT_LR['sgd']}); "
                        "not used by lbfgs, whose line search picks the step")
    t.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the data and of the initial weights")
    d = p.add_argument_group("data")
    d.add_argument("--waves", type=_int_at_least(4), default=100, help="number of sine waves (the first 3 are the test set)")
    d.add_argument("--length", type=_int_at_least(3), default=1000, help="samples per wave")
    d.add_argument("--future", type=_int_at_least(1), default=1000, help="samples to forecast after each test wave")
    d.add_argument("--period", type=_period, default=None,
                   help=f"samples per cycle, at least {MIN_PERIOD:g} (default: 2*pi*20 ~ 125.7, the example's sin(x/20))")
    d.add_argument("--noise", type=_nonneg_float, default=0.0, help="standard deviation of additive noise on the waves")
    r = p.add_argument_group("runtime")
    r.add_argument("--backend", choices=["auto", "cpp", "numba", "numpy"], default="auto",
                   help="compute backend (auto: the fastest available)")
    r.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="floating-point type")
    r.add_argument("--threads", type=_int_at_least(1), default=None, help="threads for fastrnn's kernels (default: all cores)")
    r.add_argument("--out", default="out", help="directory for forecast.png, loss.png and metrics.json")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (it is also off when stderr is not a terminal)")
    p.set_defaults(func=run)
    return p


N_TEST = 3


def run(args: argparse.Namespace) -> int:
    """Run the exercise described by the parsed ``args``; returns the exit status."""
    # a diverging run is reported once, as an error, not by NumPy's overflow warnings on the way
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import warnings

    import fastrnn
    from .data import make_sine_data
    from .nn import SequenceModel
    from .optim import LBFGS, SGD, Adam, Optimizer
    from .train import evaluate, fit, forecast

    if args.optimizer == "lbfgs" and args.lr is not None:
        raise ValueError("--lr does not apply to --optimizer lbfgs (SciPy's line search picks the step length)")
    if args.waves <= N_TEST:
        raise ValueError(f"--waves must be more than {N_TEST}: the first {N_TEST} waves are the test set, "
                         f"got {args.waves}")
    # the optional packages the run needs, checked before it trains (fastrnn[sine] installs them)
    for module in ("tqdm.auto", "matplotlib.figure") + (("scipy.optimize",) if args.optimizer == "lbfgs" else ()):
        require(module, extra="sine", feature="fastrnn sine")
    t_start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "compiled extension not available": we report the backend
        fastrnn.set_backend(args.backend)
        backend = fastrnn.get_backend().NAME
    if args.threads is not None:
        fastrnn.set_num_threads(args.threads)
    _prepare_out(args.out)

    rng = np.random.default_rng(args.seed)
    data = make_sine_data(args.waves, args.length, n_test=N_TEST, period=args.period, noise=args.noise, seed=rng,
                          dtype=args.dtype)
    model = SequenceModel(1, args.hidden, args.layers, cell=args.cell, dtype=args.dtype, seed=rng)
    n_params = sum(p.size for p in model.parameters())
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.optimizer)
    opt: Optimizer
    if args.optimizer == "lbfgs":
        # The loss falls to ~1e-6 here, where SciPy's convergence test (a change of the loss below
        # tolerance_change * max(|loss|, 1)) at PyTorch's 1e-9 is met by an iteration still making progress
        # and ends the run; 1e-13 lets the epochs run.
        opt = LBFGS(model, max_iter=20, history_size=100, tolerance_change=1e-13)
    elif args.optimizer == "adam":
        opt = Adam(model, lr=cast(float, lr))  # DEFAULT_LR has adam's and sgd's
    else:
        opt = SGD(model, lr=cast(float, lr), momentum=0.9)

    print(f"fastrnn sine: {args.cell.upper()}(1, {args.hidden}, num_layers={args.layers}) + Linear({args.hidden}, 1), "
          f"{n_params} parameters, {args.dtype}, backend {backend!r}, {fastrnn.get_num_threads()} thread(s)")
    print(f"data: {args.waves} waves x {args.length} samples; train on {args.waves - N_TEST}, test on {N_TEST}; "
          f"optimizer {args.optimizer}" + ("" if lr is None or args.optimizer == "lbfgs" else f" (lr {lr:g})"))
    sys.stdout.flush()

    from tqdm.auto import tqdm

    stages = _stages(args.curriculum, data.x_train.shape[0], data.x_train.shape[1], args.epochs)
    total = sum(epochs for _, _, epochs in stages)
    if len(stages) > 1:
        print("curriculum: " + ", then ".join(f"{e} epoch(s) on {t} samples x {w} waves" for t, w, e in stages))
    hist: dict[str, Any] = {"loss": [], "val_loss": [], "time": [], "evaluations": 0, "stage": []}
    for k, (length, waves, epochs) in enumerate(stages):
        done = len(hist["loss"])
        label = f"  [{length} x {waves}]" if len(stages) > 1 else ""

        def report(epoch: int, rec: dict[str, Any], done: int = done, label: str = label) -> None:
            tqdm.write(f"epoch {done + epoch:3d}/{total}  loss {rec['loss']:.6g}  test {rec['val_loss']:.6g}  "
                       f"({rec['time']:.2f} s){label}", file=sys.stdout)
            sys.stdout.flush()

        try:
            part = fit(model, data.x_train[:length, :waves], data.y_train[:length, :waves], opt, epochs=epochs,
                       validation=(data.x_test, data.y_test), progress=not args.no_progress, callback=report)
        except FloatingPointError as exc:
            print(f"fastrnn sine: error: training diverged: {exc}", file=sys.stderr)
            return 1
        for key in ("loss", "val_loss", "time"):
            hist[key] += part[key]
        hist["evaluations"] += part["evaluations"]
        hist["stage"] += [k] * len(part["loss"])
        if len(part["loss"]) < epochs:
            print(f"L-BFGS stopped after {len(part['loss'])} of {epochs} epoch(s): {part.get('stopped', '')}")
        hist["stopped"] = part.get("stopped")
    test_mse = evaluate(model, data.x_test, data.y_test)

    warm = data.x_test  # the first length-1 samples of each test wave
    t0 = time.perf_counter()
    pred = forecast(model, warm, args.future)
    t_forecast = time.perf_counter() - t0
    truth = data.continuation(args.length - 1, args.future)  # samples length-1 .. length-2+future, noiseless
    period = float(np.mean(data.period))
    n_period = min(args.future, int(round(period)))
    err = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2
    mse_period = float(err[:n_period].mean())
    mse_all = float(err.mean())
    epoch_time = float(np.mean(hist["time"]))

    bad = [name for name, v in (("next-step test MSE", test_mse), ("forecast MSE", mse_all)) if not math.isfinite(v)]
    if bad or not all(np.all(np.isfinite(p)) for p in model.parameters()):
        what = f"{bad[0]} is {test_mse if bad[0].startswith('next') else mse_all}" if bad else "non-finite parameters"
        print(f"fastrnn sine: error: training diverged ({what}); try a smaller --lr", file=sys.stderr)
        return 1
    print(f"final next-step test MSE: {test_mse:.4g}")
    print(f"forecast MSE over one period ({n_period} samples): {mse_period:.4g}")
    print(f"forecast MSE over {args.future} samples: {mse_all:.4g}")
    print(f"time per epoch: {epoch_time:.3f} s (training {sum(hist['time']):.2f} s in {hist['evaluations']} "
          f"forward + backward passes, forecast {t_forecast:.2f} s)")

    _plot_forecast(os.path.join(args.out, "forecast.png"), warm, truth, pred, args.length)
    _plot_loss(os.path.join(args.out, "loss.png"), hist, args)
    wall = time.perf_counter() - t_start
    metrics = {
        "backend": backend, "dtype": args.dtype, "threads": fastrnn.get_num_threads(),
        "cell": args.cell, "hidden": args.hidden, "layers": args.layers, "parameters": int(n_params),
        "optimizer": args.optimizer, "lr": lr, "epochs": args.epochs, "seed": args.seed,
        "waves": args.waves, "length": args.length, "future": args.future, "period": period, "noise": args.noise,
        "train_loss": hist["loss"], "test_loss": hist["val_loss"], "epoch_time": hist["time"],
        "final_train_loss": hist["loss"][-1], "test_mse": test_mse,
        "forecast_mse_period": mse_period, "forecast_period_samples": n_period, "forecast_mse": mse_all,
        "time_per_epoch": epoch_time, "train_time": float(sum(hist["time"])), "forecast_time": t_forecast,
        "wall_time": wall, "optimizer_stopped": hist.get("stopped"), "evaluations": hist["evaluations"],
        "curriculum": [{"samples": t, "waves": w, "epochs": e} for t, w, e in stages[:-1]],
        "epoch_stage": hist["stage"],
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(_finite_or_null(metrics), f, indent=2, allow_nan=False)  # strict JSON: no NaN/Infinity
    print(f"wrote forecast.png, loss.png, metrics.json to {args.out}/ (wall time {wall:.1f} s)")
    return 0


def _stages(curriculum: list[tuple[int | None, int | None, int]], length: int, waves: int,
            epochs: int) -> list[tuple[int, int, int]]:
    """The training stages (samples, waves, epochs): the curriculum's, clipped to the data, then the whole set.

    A curriculum stage that clips to the whole training set is dropped, so that
    a small data set (or a curriculum of 'all' stages) trains on it for --epochs only.
    """
    out = []
    for t, w, e in curriculum:
        t = length if t is None else min(t, length)
        w = waves if w is None else min(w, waves)
        if (t, w) != (length, waves):
            out.append((t, w, e))
    return out + [(length, waves, epochs)]


def _prepare_out(path: str) -> None:
    """Create the output directory now (before training), or raise ValueError saying why it cannot be."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path!r} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {path!r}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path!r}: the directory is not writeable")


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-Inf) replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _plot_forecast(path: str, warm: NDArray[Any], truth: NDArray[Any], pred: NDArray[Any], length: int) -> None:
    from matplotlib.figure import Figure

    n = warm.shape[1]
    fig = Figure(figsize=(12, 2.6 * n), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    t_warm = np.arange(warm.shape[0])
    t_fut = np.arange(length - 1, length - 1 + pred.shape[0])
    for i, (ax, color) in enumerate(zip(axes, "rgbcmyk" * n)):
        ax.plot(t_warm, warm[:, i, 0], color=color, lw=1.5, label="warm-up input")
        ax.plot(t_fut, truth[:, i, 0], color="0.5", lw=1.0, ls="--", label="true continuation")
        ax.plot(t_fut, pred[:, i, 0], color=color, lw=1.5, ls=":", label="forecast")
        ax.axvline(length - 1.5, color="0.7", lw=0.8)
        ax.set_ylabel(f"test wave {i}")
    axes[0].legend(loc="upper right", fontsize="small", ncol=3)
    axes[0].set_title("Warm-up on the test waves, then autoregressive forecast (dotted) vs the true sine (dashed)")
    axes[-1].set_xlabel("sample")
    fig.savefig(path, dpi=100)


def _plot_loss(path: str, hist: dict[str, Any], args: argparse.Namespace) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    epochs = np.arange(1, len(hist["loss"]) + 1)
    ax.semilogy(epochs, hist["loss"], "o-", label="train loss")
    if hist["val_loss"]:
        ax.semilogy(epochs, hist["val_loss"], "s--", label="test loss (next step)")
    for i in range(1, len(hist["stage"])):  # curriculum stages: the train loss is on a different sub-problem each
        if hist["stage"][i] != hist["stage"][i - 1]:
            ax.axvline(i + 0.5, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"{args.cell.upper()} {args.layers}x{args.hidden}, {args.optimizer}")
    ax.legend()
    fig.savefig(path, dpi=100)
