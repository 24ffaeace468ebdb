"""Building blocks for training small sequence models with fastrnn.

- :class:`Linear`: ``y = x W^T + b`` as ``torch.nn.Linear`` (parameters
  ``weight [out, in]`` and ``bias [out]``), forward on ``[..., in]`` and an
  explicit ``backward``.
- :class:`SequenceModel`: a recurrent stack (RNN/LSTM/GRU) followed by a
  linear head applied at every time step, with one-step inference that carries
  the recurrent state (for autoregressive forecasting).
- :func:`mse_loss`: mean squared error and its gradient, as
  ``torch.nn.functional.mse_loss`` (reduction "mean").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .._grad_mode import is_grad_enabled
from .._validate import as_dtype, float_array, positive_int
from .._validate import generator as _generator
from ..backends.contract import has_cell_state
from ..module import Module
from ..module import GradientError
from ..rnn import GRU, LSTM, RNN, _RNNBase, sized_uniform

__all__ = ["Linear", "SequenceModel", "mse_loss"]


class Linear(Module):
    """Affine layer ``y = x @ weight.T + bias`` on ``x [..., in_features]``.

    Initialised as PyTorch: weight and bias uniform in
    ``(-1/sqrt(in_features), 1/sqrt(in_features))``. ``seed``: None, an
    integer or a ``numpy.random.Generator``. ``dtype``: float32 (default, as
    the recurrent layers) or float64.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype: DTypeLike | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        Module.__init__(self)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.bias_enabled = bool(bias)
        self.dtype = as_dtype(dtype)
        rng = _generator(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        sizes = f"in_features={self.in_features}, out_features={self.out_features}"
        self._register("weight", sized_uniform(rng, bound, (self.out_features, self.in_features), self.dtype,
                                               "weight", sizes))
        if self.bias_enabled:
            self._register("bias", sized_uniform(rng, bound, (self.out_features,), self.dtype, "bias", sizes))

    def __repr__(self) -> str:
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias_enabled}, dtype={self.dtype})")

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        """``x [..., in_features]`` -> ``[..., out_features]``; unless under no_grad, keeps a private
        copy of ``x`` for backward (per thread, like the recurrent layers' records)."""
        x_arg = x
        x = float_array(x, "x", self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} features in its last axis, got shape {x.shape}")
        y: NDArray[Any] = x @ self._params["weight"].T
        if self.bias_enabled:
            y += self._params["bias"]
        if is_grad_enabled():
            if x is x_arg or not x.flags.owndata:  # the caller's array: it may change before backward
                x = x.copy()
            self._local.saved = (x, self._version)
        else:
            self._local.saved = None
        return y

    def backward(self, grad_output: ArrayLike) -> NDArray[Any]:
        """Gradient w.r.t. this thread's last forward's input; accumulates ``grads['weight']`` (and ``'bias'``).

        Raises :class:`GradientError` if parameters were replaced since that forward."""
        saved = getattr(self._local, "saved", None)
        if saved is None:
            raise GradientError("Linear.backward: nothing to differentiate (no forward with gradients enabled "
                                "in this thread, or backward already consumed it)")
        x, version = saved
        self._check_version(version)
        g = float_array(grad_output, "grad_output", self.dtype, shapes=[x.shape[:-1] + (self.out_features,)])
        g2 = g.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        pairs = [("weight", g2.T @ x2)]
        if self.bias_enabled:
            pairs.append(("bias", g2.sum(axis=0)))
        dx: NDArray[Any] = (g2 @ self._params["weight"]).reshape(x.shape)
        self._local.saved = None
        self._accumulate(pairs)
        return dx


_CELLS: dict[str, type[LSTM] | type[GRU] | type[RNN]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


class SequenceModel(Module):
    """A recurrent stack and a linear head: ``pred[t] = head(rnn(x)[t])``.

    ``cell``: "lstm", "gru" or "rnn" (tanh). Parameters are named as a PyTorch
    model with attributes ``rnn`` and ``head`` would name them
    (``rnn.weight_ih_l0``, ..., ``head.weight``, ``head.bias``), so a
    ``state_dict`` moves between the two. They are the very arrays of the two
    sub-layers (updating one updates the other); ``grads`` likewise.

    Layout: ``x [T, B, input_size]`` (``[B, T, input_size]`` with
    ``batch_first``); predictions ``[T, B, output_size]`` (same layout).
    """

    def __init__(self, input_size: int = 1, hidden_size: int = 51, num_layers: int = 2,
                 output_size: int | None = None,
                 cell: str = "lstm", *, batch_first: bool = False, dtype: DTypeLike | None = None,
                 backend: str | None = None,
                 seed: int | np.random.Generator | None = None, rnn: _RNNBase | None = None,
                 head: Linear | None = None) -> None:
        Module.__init__(self)
        if rnn is None:
            if not isinstance(cell, str) or cell.lower() not in _CELLS:
                raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
            rng = _generator(seed)
            rnn = _CELLS[cell.lower()](input_size, hidden_size, num_layers, batch_first=batch_first, dtype=dtype,
                                       backend=backend, seed=rng)
            out = input_size if output_size is None else output_size
            head = Linear(rnn.hidden_size * rnn._dirs, out, dtype=rnn.dtype, seed=rng)
        elif head is None:
            raise TypeError("SequenceModel(rnn=..., head=...) needs both the recurrent layer and the head")
        if not hasattr(rnn, "num_layers") or not isinstance(head, Linear):
            raise TypeError("rnn must be a fastrnn RNN/LSTM/GRU layer and head a fastrnn.nn.Linear")
        if head.in_features != rnn.hidden_size * rnn._dirs:
            raise ValueError(f"head.in_features ({head.in_features}) must equal the recurrent output size "
                             f"({rnn.hidden_size * rnn._dirs})")
        if head.dtype != rnn.dtype:
            raise TypeError(f"rnn and head must share one dtype, got {rnn.dtype} and {head.dtype}")
        self.rnn = rnn
        self.head = head
        for prefix, mod in (("rnn", rnn), ("head", head)):
            for name, arr in mod._params.items():
                self._params[f"{prefix}.{name}"] = arr
                self.grads[f"{prefix}.{name}"] = mod.grads[name]

    def _bump(self, names: Iterable[str]) -> None:
        """The parameters are the sub-layers': their versions change (their records check them)."""
        Module._bump(self, names)
        for prefix, mod in (("rnn.", self.rnn), ("head.", self.head)):
            mine = [n[len(prefix):] for n in names if n.startswith(prefix)]
            if mine:
                mod._bump(mine)

    @classmethod
    def from_modules(cls, rnn: _RNNBase, head: Linear) -> SequenceModel:
        """Wrap an existing recurrent layer and ``Linear`` head (their arrays are shared, not copied)."""
        return cls(rnn=rnn, head=head)

    # properties --------------------------------------------------------
    @property
    def dtype(self) -> np.dtype[Any]:
        return self.rnn.dtype

    @property
    def batch_first(self) -> bool:
        return self.rnn.batch_first

    @property
    def input_size(self) -> int:
        return self.rnn.input_size

    @property
    def output_size(self) -> int:
        return self.head.out_features

    @property
    def cell(self) -> str:
        kind = self.rnn.kind
        return "lstm" if has_cell_state(kind) else "gru" if kind in ("gru", "gru_orig") else "rnn"

    def __repr__(self) -> str:
        return f"SequenceModel(\n  (rnn): {self.rnn!r}\n  (head): {self.head!r}\n)"

    # modes / grads -----------------------------------------------------
    def train(self, mode: bool = True) -> SequenceModel:
        Module.train(self, mode)
        self.rnn.train(mode)
        self.head.train(mode)
        return self

    def zero_grad(self) -> None:
        self.rnn.zero_grad()
        self.head.zero_grad()

    # forward / backward ------------------------------------------------
    def forward(self, x: ArrayLike, state: Any = None, return_state: bool = False,
                lengths: ArrayLike | None = None) -> Any:
        """Predictions for every step of ``x``; with ``return_state`` also the final recurrent state.

        ``state``: initial state as the recurrent layer takes it (``h_0``, or
        ``(h_0, c_0)`` for an LSTM), or None for zeros.
        """
        out, h_n = self.rnn(x, state, lengths=lengths)
        pred = self.head(out)
        return (pred, h_n) if return_state else pred

    def backward(self, grad_pred: ArrayLike, grad_state: Any = None) -> NDArray[Any]:
        """Back-propagate ``grad_pred`` (same shape as the predictions); returns the input gradient.

        Parameter gradients accumulate in ``grads``; ``grad_state`` is an
        optional gradient w.r.t. the final state (as the layer's backward takes it).
        """
        g_out = self.head.backward(grad_pred)
        dx, _ = self.rnn.backward(g_out, grad_state)
        return dx

    def step(self, x_t: ArrayLike, state: Any = None) -> tuple[NDArray[Any], Any]:
        """One time step: ``x_t [B, input_size]`` -> ``(pred [B, output_size], new_state)``.

        Runs the sequence layer on a one-step input from ``state``, so a loop
        of ``step`` calls equals one ``forward`` over the whole sequence
        without recomputing the prefix. Use under ``fastrnn.no_grad()`` for
        inference.
        """
        x_t = float_array(x_t, "x_t", self.dtype, shapes=[(None, self.input_size)])
        x3 = x_t[:, None, :] if self.batch_first else x_t[None, :, :]
        out, new_state = self.rnn(x3, state)
        pred = self.head(out[:, 0, :] if self.batch_first else out[0])
        return pred, new_state


def mse_loss(pred: ArrayLike, target: ArrayLike) -> tuple[float, NDArray[Any]]:
    """Mean squared error and its gradient w.r.t. ``pred``: ``(loss, grad)``.

    ``loss = mean((pred - target)**2)`` as ``torch.nn.functional.mse_loss``
    (reduction "mean"), returned as a Python float; ``grad`` has ``pred``'s
    shape and dtype.
    """
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.dtype.kind != "f":
        raise TypeError(f"pred must be a floating-point array, got dtype {p.dtype}")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    if p.size == 0:
        raise ValueError("mse_loss of empty arrays is undefined")
    diff = p - t.astype(p.dtype, copy=False)
    loss = float(np.mean(diff * diff))
    grad = diff * p.dtype.type(2.0 / p.size)
    return loss, grad

