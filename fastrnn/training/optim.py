"""Optimizers that update a model's NumPy parameter arrays in place.

- :class:`SGD` and :class:`Adam` follow PyTorch's update rules exactly
  (``torch.optim.SGD``/``Adam``, single-tensor path), so the same model, data
  and hyper-parameters give the same loss curve.
- :class:`LBFGS` hands the flattened parameters to SciPy's L-BFGS-B
  (``scipy.optimize.minimize``) with a closure returning the loss and the
  flat gradient.
- :func:`clip_grad_norm_` scales gradients to a maximum global norm, as
  ``torch.nn.utils.clip_grad_norm_``.

An optimizer takes a model (anything with ``named_parameters()`` and a
``grads`` mapping under the same names, e.g. a fastrnn layer or
:class:`fastrnn.nn.SequenceModel`), or a pair ``(params, grads)`` of
name -> array mappings. Gradients are read, never cleared: call the model's
``zero_grad()`` before each backward, as in PyTorch.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .._optional import require

__all__ = ["Optimizer", "SGD", "Adam", "LBFGS", "clip_grad_norm_", "Trainable", "Closure"]


class Trainable(Protocol):
    """What an optimizer trains: named parameter arrays and their gradients under the same names."""

    def named_parameters(self) -> Iterable[tuple[str, NDArray[Any]]]: ...

    @property
    def grads(self) -> Mapping[str, NDArray[Any]]: ...


#: a model, or a pair (params, grads) of name -> array mappings (params may be (name, array) pairs)
ModelLike = (Trainable
             | tuple[Mapping[str, NDArray[Any]] | Iterable[tuple[str, NDArray[Any]]], Mapping[str, NDArray[Any]]])
#: re-evaluates the model: zeroes the gradients, computes the loss, back-propagates, returns the loss
Closure = Callable[[], float]


def _float(value: object, name: str, minimum: float | None = None, maximum: float | None = None,
           open_max: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if maximum is not None and (x >= maximum if open_max else x > maximum):
        raise ValueError(f"{name} must be {'<' if open_max else '<='} {maximum}, got {x}")
    return x


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _params_and_grads(model: ModelLike) -> tuple[OrderedDict[str, NDArray[Any]], Mapping[str, NDArray[Any]]]:
    """(OrderedDict name -> param, mapping name -> grad) from a model or a (params, grads) pair."""
    params: OrderedDict[str, NDArray[Any]]
    grads: Mapping[str, NDArray[Any]]
    if isinstance(model, tuple) and len(model) == 2:
        given, grads = model
        params = OrderedDict(given.items() if isinstance(given, Mapping) else given)
    elif hasattr(model, "named_parameters") and hasattr(model, "grads"):
        params, grads = OrderedDict(model.named_parameters()), model.grads
    else:
        raise TypeError("an optimizer needs a model with named_parameters() and grads, "
                        f"or a (params, grads) pair of mappings; got {type(model).__name__}")
    if not params:
        raise ValueError("the optimizer got no parameters")
    for name, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise TypeError(f"parameter {name!r} must be a floating-point NumPy array")
        if name not in grads:
            raise ValueError(f"no gradient array for parameter {name!r}")
        if grads[name].shape != p.shape:
            raise ValueError(f"gradient of {name!r} has shape {grads[name].shape}, parameter {p.shape}")
    return params, grads


class Optimizer:
    """Base class: holds the parameters, their gradients and per-parameter state."""

    #: the hyper-parameters, by name (each subclass's own)
    hyper: dict[str, Any]

    def __init__(self, model: ModelLike) -> None:
        self.params, self.grads = _params_and_grads(model)
        self.state: dict[str, dict[str, Any]] = {name: {} for name in self.params}

    def zero_grad(self) -> None:
        """Set every gradient array to zero (in place)."""
        for name in self.params:
            self.grads[name].fill(0)

    def step(self, closure: Closure | None = None) -> float | None:
        """One update. ``closure`` (optional) re-evaluates the loss, filling the grads, and returns it."""
        loss = None
        if closure is not None:
            loss = closure()
        self._update()
        return loss

    def _update(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The per-parameter state (arrays copied) and the hyper-parameters."""
        return {"state": {n: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                          for n, s in self.state.items()},
                "hyper": dict(self.hyper)}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.state = {n: dict(s) for n, s in sd["state"].items()}
        self.hyper.update(sd["hyper"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    Update rule::

        g = grad + weight_decay * p
        buf = g (first step) | momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov) | buf
        p -= lr * g
    """

    def __init__(self, model: ModelLike, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        super().__init__(model)
        self.hyper = dict(lr=_float(lr, "lr", 0.0), momentum=_float(momentum, "momentum", 0.0),
                          dampening=_float(dampening, "dampening"),
                          weight_decay=_float(weight_decay, "weight_decay", 0.0),
                          nesterov=bool(nesterov), maximize=bool(maximize))
        if self.hyper["nesterov"] and (self.hyper["momentum"] <= 0 or self.hyper["dampening"] != 0):
            raise ValueError("nesterov momentum requires a momentum > 0 and zero dampening")

    def _update(self) -> None:
        h = self.hyper
        lr, mom, damp, wd = h["lr"], h["momentum"], h["dampening"], h["weight_decay"]
        for name, p in self.params.items():
            g = self.grads[name]
            g = -g if h["maximize"] else g
            if wd != 0:
                g = g + wd * p
            if mom != 0:
                st = self.state[name]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = g.copy()
                else:
                    buf *= mom
                    buf += (1 - damp) * g
                g = g + mom * buf if h["nesterov"] else buf
            p -= lr * g


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad`` optional).

    Update rule::

        g = grad + weight_decay * p          (or p *= 1 - lr*weight_decay if decoupled, i.e. AdamW)
        m = m + (1 - beta1) * (g - m)        (torch's lerp)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v)                  (amsgrad; then v := vmax below)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p -= lr / (1 - beta1**t) * m / denom
    """

    def __init__(self, model: ModelLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(model)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.hyper = dict(lr=_float(lr, "lr", 0.0), beta1=_float(b1, "beta1", 0.0, 1.0, open_max=True),
                          beta2=_float(b2, "beta2", 0.0, 1.0, open_max=True), eps=_float(eps, "eps", 0.0),
                          weight_decay=_float(weight_decay, "weight_decay", 0.0), amsgrad=bool(amsgrad),
                          maximize=bool(maximize), decoupled_weight_decay=bool(decoupled_weight_decay))

    def _update(self) -> None:
        h = self.hyper
        lr, b1, b2, eps, wd = h["lr"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"]
        for name, p in self.params.items():
            g = self.grads[name]
            g = -g if h["maximize"] else g
            st = self.state[name]
            if not st:
                st["step"] = 0
                st["exp_avg"] = np.zeros_like(p)
                st["exp_avg_sq"] = np.zeros_like(p)
                if h["amsgrad"]:
                    st["max_exp_avg_sq"] = np.zeros_like(p)
            st["step"] += 1
            t = st["step"]
            if wd != 0:
                if h["decoupled_weight_decay"]:
                    p *= 1 - lr * wd
                else:
                    g = g + wd * p
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m += (1 - b1) * (g - m)
            v *= b2
            v += (1 - b2) * (g * g)
            bc1 = 1 - b1 ** t
            bc2_sqrt = (1 - b2 ** t) ** 0.5
            if h["amsgrad"]:
                np.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
                denom = np.sqrt(st["max_exp_avg_sq"]) / bc2_sqrt + eps
            else:
                denom = np.sqrt(v) / bc2_sqrt + eps
            p -= (lr / bc1) * (m / denom)


def _scipy_minimize() -> Callable[..., Any]:
    """``scipy.optimize.minimize``, which LBFGS runs (SciPy comes with ``fastrnn[train]``)."""
    minimize: Callable[..., Any] = require("scipy.optimize", extra="train", feature="fastrnn.optim.LBFGS").minimize
    return minimize


class LBFGS(Optimizer):
    """L-BFGS through ``scipy.optimize.minimize(method="L-BFGS-B")`` over the flattened parameters.

    ``step(closure)`` runs one SciPy minimisation of at most ``max_iter``
    iterations and ``max_eval`` loss evaluations (PyTorch's defaults 20 and
    25; SciPy checks ``maxfun`` between line searches, so the last one may
    overshoot it by a few evaluations), keeping ``history_size`` correction pairs; ``closure()`` must zero
    the gradients, compute the loss, back-propagate and return the loss. The
    step length comes from SciPy's line search, so there is no learning rate.
    SciPy works in float64; float32 models are cast for it and back.

    ``step`` returns the loss at the starting point (as PyTorch's LBFGS);
    ``last_result`` holds SciPy's ``OptimizeResult`` (``fun`` is the loss at
    the point the parameters are left at). :meth:`run` makes one longer run
    that keeps its curvature history (what :func:`fastrnn.train.fit` uses
    for full-batch training).
    """

    def __init__(self, model: ModelLike, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100) -> None:
        _scipy_minimize()  # missing SciPy: say so now, not at the first step
        super().__init__(model)
        max_iter = _positive_int(max_iter, "max_iter")
        max_eval = _positive_int(max_iter * 5 // 4 if max_eval is None else max_eval, "max_eval")
        self.hyper = dict(max_iter=max_iter, max_eval=max_eval,
                          tolerance_grad=_float(tolerance_grad, "tolerance_grad", 0.0),
                          tolerance_change=_float(tolerance_change, "tolerance_change", 0.0),
                          history_size=_positive_int(history_size, "history_size"))
        #: SciPy's OptimizeResult of the last run
        self.last_result: Any = None
        self.n_evals = 0

    def _get_flat(self) -> NDArray[np.float64]:
        return np.concatenate([p.ravel() for p in self.params.values()]).astype(np.float64)

    def _set_flat(self, flat: NDArray[np.float64]) -> None:
        i = 0
        for p in self.params.values():
            n = p.size
            p[...] = flat[i:i + n].reshape(p.shape)
            i += n

    def _flat_grad(self) -> NDArray[np.float64]:
        return np.concatenate([self.grads[n].ravel() for n in self.params]).astype(np.float64)

    def step(self, closure: Closure | None = None) -> float:
        if closure is None:
            raise ValueError("LBFGS.step needs a closure that computes the loss and its gradients")
        evals: list[float] = []
        self.run(closure, self.hyper["max_iter"], self.hyper["max_eval"], _evals=evals)
        return evals[0] if evals else float(self.last_result.fun)

    def run(self, closure: Closure, max_iter: int, max_eval: int,
            callback: Callable[[int, NDArray[np.float64], float], object] | None = None,
            _evals: list[float] | None = None) -> Any:
        """One SciPy L-BFGS-B run of at most ``max_iter`` iterations and ``max_eval`` evaluations.

        Unlike a sequence of :meth:`step` calls (each of which starts SciPy
        afresh, forgetting the curvature pairs), one long run keeps its
        history throughout, as ``torch.optim.LBFGS`` keeps it across steps.
        ``callback(iteration, x, loss)`` is called after every iteration with
        the flat float64 iterate and its loss; the parameters hold ``x``
        during the call. Returns SciPy's ``OptimizeResult`` (also kept in
        ``last_result``); the parameters are left at its ``x``.
        """
        minimize = _scipy_minimize()

        evals = [] if _evals is None else _evals

        def fun(flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            self._set_flat(flat)
            loss = float(closure())
            evals.append(loss)
            return loss, self._flat_grad()

        count = [0]

        def on_iteration(intermediate_result: Any) -> None:
            assert callback is not None
            count[0] += 1
            self._set_flat(intermediate_result.x)
            callback(count[0], intermediate_result.x, float(intermediate_result.fun))

        h = self.hyper
        res = minimize(fun, self._get_flat(), jac=True, method="L-BFGS-B",
                       callback=on_iteration if callback is not None else None,
                       options=dict(maxiter=int(max_iter), maxfun=int(max_eval), maxcor=h["history_size"],
                                    gtol=h["tolerance_grad"], ftol=h["tolerance_change"]))
        self._set_flat(res.x)  # the last evaluation need not be at the returned point
        self.last_result = res
        self.n_evals += len(evals)
        return res


def clip_grad_norm_(grads: Trainable | Mapping[str, NDArray[Any]] | Iterable[NDArray[Any]], max_norm: float,
                    norm_type: float | str = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale gradients in place so that their global norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``
    norm of the per-array norms (``inf``: the largest absolute value), and
    every gradient is multiplied by ``min(1, max_norm / (total + 1e-6))``.
    ``grads``: a model (its ``grads``), a mapping name -> array, or a list of arrays.
    """
    if hasattr(grads, "grads") and not isinstance(grads, dict):
        grads = grads.grads
    arrays: list[NDArray[Any]] = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    max_norm = _float(max_norm, "max_norm", 0.0)
    order = float("inf") if norm_type in ("inf", math.inf) else _float(norm_type, "norm_type")
    if not arrays:
        return 0.0
    if math.isinf(order):
        norms = [np.max(np.abs(g)) if g.size else 0.0 for g in arrays]
        total = float(np.max(norms))
    else:
        norms = [np.linalg.norm(g.ravel(), order) for g in arrays]
        total = float(np.linalg.norm(np.asarray(norms, dtype=np.float64), order))
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"the total norm of order {order} of the gradients is non-finite, so it cannot be "
                           "clipped (set error_if_nonfinite=False to clip anyway)")
    coef = min(max_norm / (total + 1e-6), 1.0)
    for g in arrays:
        g *= g.dtype.type(coef)
    return total
