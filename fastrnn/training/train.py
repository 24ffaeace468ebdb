"""Training loop and autoregressive forecasting for :class:`fastrnn.nn.SequenceModel`.

- :func:`fit`: epochs of (mini-)batch training with any optimizer of
  :mod:`fastrnn.optim`, MSE loss, optional gradient clipping and validation,
  a tqdm progress bar; returns the loss history.
- :func:`evaluate`: the loss of a model on a data set, under ``no_grad``.
- :func:`forecast`: continue sequences autoregressively, carrying the
  recurrent state one step at a time.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._grad_mode import no_grad
from .._optional import require
from .._validate import generator
from ..backends import get_backend
from .nn import SequenceModel, mse_loss
from .optim import LBFGS, Adam, Optimizer, clip_grad_norm_

__all__ = ["fit", "evaluate", "forecast"]


#: ``loss_fn(pred, target) -> (loss, gradient w.r.t. pred)``, as :func:`~fastrnn.nn.mse_loss`
LossFn = Callable[[NDArray[Any], ArrayLike], tuple[float, NDArray[Any]]]


def _batch_axis(model: SequenceModel) -> int:
    return 0 if getattr(model, "batch_first", False) else 1


def evaluate(model: SequenceModel, x: ArrayLike, y: ArrayLike, loss_fn: LossFn = mse_loss) -> float:
    """``loss_fn(model(x), y)`` under ``no_grad`` (the loss only)."""
    with no_grad():
        pred = model.forward(x)
    return loss_fn(pred, y)[0]


def _progress_enabled(progress: bool) -> bool:
    if not progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def fit(model: SequenceModel, x: ArrayLike, y: ArrayLike, optimizer: Optimizer | None = None, epochs: int = 10, *,
        validation: tuple[ArrayLike, ArrayLike] | None = None, batch_size: int | None = None,
        clip: float | None = None, loss_fn: LossFn = mse_loss, progress: bool = True,
        callback: Callable[[int, dict[str, Any]], object] | None = None,
        seed: int | np.random.Generator | None = None,
        blas_threads: int | str | None = "auto") -> dict[str, Any]:
    """Train ``model`` on inputs ``x`` and targets ``y``; return the history.

    - ``x``, ``y``: arrays in the model's layout (``[T, B, I]`` and
      ``[T, B, O]``, or batch-first).
    - ``optimizer``: an optimizer of :mod:`fastrnn.optim` built on ``model``
      (default ``Adam(model, lr=1e-3)``). With :class:`~fastrnn.optim.LBFGS`
      full-batch training is one L-BFGS run of ``max_iter * epochs``
      iterations that keeps its curvature history (an epoch is ``max_iter``
      iterations; the run stops early if it converges), and mini-batch
      training one ``optimizer.step(closure)`` per batch.
    - ``epochs``: passes over the data.
    - ``validation``: optional ``(x_val, y_val)``, evaluated after every epoch.
    - ``batch_size``: sequences per batch (None: the whole batch at once, as
      the classic full-batch sine exercise); batches are shuffled each epoch
      with ``seed``.
    - ``clip``: max global gradient norm (:func:`~fastrnn.optim.clip_grad_norm_`),
      or None. Not allowed with L-BFGS (it would break the line search).
    - ``progress``: a tqdm bar over epochs showing the loss; off when False or
      when stderr is not a terminal.
    - ``callback(epoch, record)``: called after every epoch with a dict of
      that epoch's figures (``loss``, ``val_loss``, ``time``).
    - ``blas_threads``: threads of NumPy's and SciPy's BLAS while ``fit``
      trains (threadpoolctl; the previous counts come back when it returns),
      or None to leave them as they are. ``"auto"``: 1 when the model's
      layers run on a backend whose kernels have their own pool (the
      compiled one), None when its large products run in BLAS (NumPy,
      Numba: ``PRODUCTS_IN_BLAS``). With the compiled
      kernels, training gives BLAS only small products (the head, L-BFGS's
      vector operations), and its idle workers spin after each call on the
      cores the kernels are using: one thread made the default
      ``fastrnn sine`` run 30 % faster on 2 cores.

    Returns a dict: ``loss`` (per epoch: the mean loss of the epoch's batches
    before their updates; with L-BFGS the loss at the epoch's last iterate),
    ``val_loss`` (per epoch, empty without validation), ``time`` (seconds
    per epoch, excluding validation) and ``evaluations`` (forward + backward
    passes over the training data, the cost unit of training: one per batch
    for Adam/SGD, as many as the line search asks for with L-BFGS).
    """
    if optimizer is None:
        optimizer = Adam(model, lr=1e-3)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastrnn.optim optimizer, got {type(optimizer).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    lbfgs = isinstance(optimizer, LBFGS)
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not clip > 0:
            raise ValueError(f"clip must be a positive number (a max gradient norm) or None, got {clip!r}")
        if lbfgs:
            raise ValueError("gradient clipping cannot be combined with L-BFGS (it would break its line search)")
    x = np.asarray(x)
    y = np.asarray(y)
    axis = _batch_axis(model)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must be 3-d arrays sharing their time and batch axes, got {x.shape} and {y.shape}")
    n = x.shape[axis]
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (x_val, y_val) or None")
    # before any step: NaN/Inf in the data would reach the parameters through the first update
    for name, a in (("x", x), ("y", y)) + ((("validation x", validation[0]), ("validation y", validation[1]))
                                            if validation is not None else ()):
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or Inf ({int(np.size(a) - np.count_nonzero(np.isfinite(a)))} "
                             "values); fit checks its data before it steps")
    if isinstance(blas_threads, str) and blas_threads == "auto":
        backend = get_backend(getattr(getattr(model, "rnn", None), "backend", None))
        blas_threads = None if backend.PRODUCTS_IN_BLAS else 1
    elif blas_threads is not None and (isinstance(blas_threads, bool)
                                       or not isinstance(blas_threads, numbers.Integral) or blas_threads < 1):
        raise ValueError(f"blas_threads must be a positive integer, 'auto' or None, got {blas_threads!r}")
    rng = generator(seed)

    history: dict[str, Any] = {"loss": [], "val_loss": [], "time": [], "evaluations": 0}
    tqdm = require("tqdm.auto", extra="train", feature="fastrnn.train.fit (its progress bar)").tqdm

    bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not _progress_enabled(progress),
               dynamic_ncols=True, leave=True)

    def end_epoch(loss: float, dt: float) -> None:
        epoch = len(history["loss"]) + 1
        if not math.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"the training loss became {loss} at epoch {epoch}; "
                                     "try a smaller learning rate or gradient clipping")
        history["loss"].append(loss)
        history["time"].append(dt)
        record: dict[str, Any] = {"epoch": epoch, "loss": loss, "time": dt}
        postfix = {"loss": f"{loss:.3g}"}
        if validation is not None:
            model.eval()
            val = evaluate(model, validation[0], validation[1], loss_fn)
            model.train()
            history["val_loss"].append(val)
            record["val_loss"] = val
            postfix["val"] = f"{val:.3g}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if callback is not None:
            callback(epoch, record)

    def closure_for(xb: NDArray[Any], yb: NDArray[Any]) -> Callable[[], float]:
        def closure() -> float:
            history["evaluations"] += 1
            model.zero_grad()
            pred = model.forward(xb)
            loss, grad = loss_fn(pred, yb)
            model.backward(grad)
            return loss
        return closure

    blas = None
    if blas_threads is not None:
        threadpoolctl = require("threadpoolctl", extra="train", feature="fastrnn.train.fit (its BLAS thread limit)")
        blas = threadpoolctl.threadpool_limits(limits=int(blas_threads), user_api="blas")
    try:
        model.train()
        if lbfgs and batch_size >= n and epochs > 0:
            # Full batch: one L-BFGS run over all epochs, so that it keeps its curvature history (as
            # torch.optim.LBFGS does across steps); an epoch is max_iter of its iterations.
            per_epoch = optimizer.hyper["max_iter"]
            clock = [time.perf_counter(), 0]  # start of the epoch, iterations done when it started

            def on_iteration(it: int, flat: NDArray[Any], loss: float) -> None:
                if it % per_epoch == 0:
                    end_epoch(loss, time.perf_counter() - clock[0])
                    clock[:] = [time.perf_counter(), it]

            res = cast(LBFGS, optimizer).run(closure_for(x, y), per_epoch * epochs,
                                             optimizer.hyper["max_eval"] * epochs, callback=on_iteration)
            if res.nit > clock[1] or not history["loss"]:  # stopped within an epoch (converged or out of evaluations)
                end_epoch(float(res.fun), time.perf_counter() - clock[0])
            history["stopped"] = str(res.message)
        else:
            for _ in range(epochs):
                t0 = time.perf_counter()
                if batch_size >= n:
                    batches: list[NDArray[np.intp] | None] = [None]
                else:
                    order = rng.permutation(n)
                    batches = [np.sort(order[i:i + batch_size]) for i in range(0, n, batch_size)]
                losses, weights = [], []
                for idx in batches:
                    xb = x if idx is None else np.take(x, idx, axis=axis)
                    yb = y if idx is None else np.take(y, idx, axis=axis)
                    closure = closure_for(xb, yb)
                    if lbfgs:
                        optimizer.step(closure)
                        loss = float(cast(LBFGS, optimizer).last_result.fun)
                    else:
                        loss = closure()
                        if not math.isfinite(loss):
                            break  # checked before the step: the parameters stay finite
                        if not all(np.all(np.isfinite(g)) for g in model.grads.values()):
                            bar.close()
                            raise FloatingPointError(
                                f"the gradients became non-finite at epoch {len(history['loss']) + 1} "
                                f"(loss {loss:g}); try a smaller learning rate or gradient clipping")
                        if clip is not None:
                            clip_grad_norm_(model.grads, clip)
                        optimizer.step()
                    if not math.isfinite(loss):
                        break
                    losses.append(loss)
                    weights.append(xb.shape[axis])
                else:
                    end_epoch(float(np.average(losses, weights=weights)), time.perf_counter() - t0)
                    continue
                end_epoch(loss, time.perf_counter() - t0)  # raises FloatingPointError
    finally:
        if blas is not None:
            blas.restore_original_limits()
    bar.close()
    model.eval()
    return history


def forecast(model: SequenceModel, warmup: ArrayLike, steps: int, state: Any = None,
             return_state: bool = False) -> Any:
    """Continue sequences autoregressively for ``steps`` samples after ``warmup``.

    ``warmup``: ``[T, B, I]`` (batch-first models: ``[B, T, I]``); the model's
    output size must equal its input size, since each prediction is fed back as
    the next input. The warm-up runs once through the sequence layers (from
    ``state``, or zeros); its last prediction is the first forecast sample, and
    every further one comes from :meth:`~fastrnn.nn.SequenceModel.step` on the
    previous prediction with the carried recurrent state, under ``no_grad``.

    Returns ``[steps, B, O]`` (``[B, steps, O]`` batch-first); with
    ``return_state`` also the final recurrent state.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if model.output_size != model.input_size:
        raise ValueError(f"forecast feeds predictions back as inputs, so output_size ({model.output_size}) must "
                         f"equal input_size ({model.input_size})")
    bf = getattr(model, "batch_first", False)
    with no_grad():
        pred, state = model.forward(warmup, state, return_state=True)
        y = pred[:, -1, :] if bf else pred[-1]
        out = np.empty((steps,) + y.shape, dtype=y.dtype)
        out[0] = y
        for k in range(1, steps):
            y, state = model.step(y, state)
            out[k] = y
    if bf:
        out = np.ascontiguousarray(out.transpose(1, 0, 2))
    return (out, state) if return_state else out
