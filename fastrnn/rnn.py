"""Recurrent layers and cells, drop-in compatible with PyTorch's ``nn.RNN``,
``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell`` and ``nn.GRUCell``.

The layers validate input, compose layers x directions and keep parameters
and gradients; the math runs in a backend (see ``backends/CONTRACT.md``),
which these classes never name.

``recurrent_dropout=p`` (every layer and cell): variational recurrent dropout
(Gal & Ghahramani; Keras's ``recurrent_dropout``). In training mode each layer
forward draws, from the layer's generator (``seed=``), one mask per layer and
direction of shape ``[B, hidden_size]`` (``[B, proj_size]`` with an LSTM's
projection; keep with probability 1-p, scaled by 1/(1-p)) and every step's
recurrent product sees ``h * mask`` (the GRU's ``z*h`` sees h itself): the same
units of each sequence are dropped at every step. A cell, which sees one step at
a time, draws its mask at the first training-mode step of a sequence (a step
given no ``hx``, or the first after :meth:`~RNNCell.reset_dropout_mask`) and
keeps it, per thread, for the steps that follow, as Keras's cells do. In eval
mode no mask is applied (its expectation).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import backends as _backends
from ._grad_mode import is_grad_enabled
from ._validate import as_dtype, flag, float_array, fraction, lengths_array, positive_int
from ._validate import generator as _generator
from .backends.contract import GATES, PEEPHOLES, PartialBackwardError, has_cell_state
from .module import GradientError, Module

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "GradientError"]


def sized_uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: DTypeLike, name: str,
                  sizes: str) -> NDArray[Any]:
    """A new parameter ``name``: uniform in (-bound, bound), or an error naming the sizes that made
    it too large (MemoryError if it does not fit in memory, ValueError if no array can be that big)."""
    try:
        return rng.uniform(-bound, bound, size=shape).astype(dtype)
    except MemoryError:
        raise MemoryError(f"{name} of shape {shape} does not fit in memory ({sizes})") from None
    except ValueError as exc:
        raise ValueError(f"{sizes} is too large: {name} would have shape {shape} ({exc})") from None


def _rnn_kind(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "rnn_" + nonlinearity


def _gru_kind(linear_before_reset: bool) -> str:
    return "gru" if flag(linear_before_reset, "linear_before_reset") else "gru_orig"


def _lstm_kind(input_forget: bool) -> str:
    """The LSTM's kind: ``lstm_cifg`` (f = 1 - i) with ``input_forget``, else ``lstm``."""
    return "lstm_cifg" if flag(input_forget, "input_forget") else "lstm"


def _lstm_variants_repr(m: Any) -> str:
    """The LSTM variants' part of a layer's or cell's repr (``m.peepholes``, ``m.input_forget``)."""
    return (", peepholes=True" if m.peepholes else "") + (", input_forget=True" if m.input_forget else "")


def _dropout_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float, dtype: np.dtype[Any]) -> NDArray[Any]:
    """Inverted dropout's mask: each element kept with probability 1-p and scaled by 1/(1-p) (0 if p = 1)."""
    mask = (rng.random(shape) >= p).astype(dtype)
    mask *= dtype.type(1.0 / (1.0 - p)) if p < 1 else 0
    return mask


def _cell_mask(kept: Any, first: bool, B: int, draw: Callable[[], Any], error: type[Exception] = ValueError) -> Any:
    """A cell's recurrent-dropout mask for a step of B rows: a new one, ``draw()``, at a sequence's
    ``first`` step or when none is ``kept``; else the kept one, which must have B rows (``error``
    says to reset it otherwise). The NumPy cells and fastrnn.torch's share this rule."""
    if first or kept is None:
        return draw()
    if kept.shape[0] != B:
        raise error(f"input has a batch of {B}, but the recurrent-dropout mask of the current sequence has "
                    f"{kept.shape[0]} rows: call reset_dropout_mask() at the start of each sequence")
    return kept


#: The variants' parameters: (backend gradient key, parameter name prefix); present when the gradient is.
_VARIANT_PARAMS = (("w_hr", "weight_hr"), ("peep", "weight_peep"))


def _param_grads(grads: Any, suffix: str, bias: bool) -> list[tuple[str, NDArray[Any]]]:
    """(parameter name, gradient) pairs of a backend's backward result."""
    pairs = [("weight_ih" + suffix, grads["w_ih"]), ("weight_hh" + suffix, grads["w_hh"])]
    if bias:
        pairs += [("bias_ih" + suffix, grads["b_ih"]), ("bias_hh" + suffix, grads["b_hh"])]
    pairs += [(name + suffix, grads[key]) for key, name in _VARIANT_PARAMS if grads.get(key) is not None]
    return pairs


def _ready(a: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> bool:
    """``a`` already is what the backends take: a C-contiguous ndarray of ``shape`` and ``dtype``."""
    return type(a) is np.ndarray and a.dtype is dtype and a.shape == shape and a.flags.c_contiguous


def _zeros_if_none(value: Any, shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> NDArray[Any]:
    if value is None:
        return np.zeros(shape, dtype=dtype)
    return float_array(value, name, dtype, shapes=[shape])


class _Recurrent(Module):
    """What layers and cells share: kind, sizes, dtype, backend, initialisation."""

    #: Whether the kind carries a cell state (an LSTM: hx is the pair (h, c)). A class attribute
    #: (LSTM and LSTMCell set it), read on every cell step; _setup checks it against the contract.
    _has_c = False

    def _setup(self, kind: str, input_size: int, hidden_size: int, bias: bool, dtype: DTypeLike | None,
               backend: str | None, seed: int | np.random.Generator | None) -> None:
        Module.__init__(self)
        assert self._has_c == has_cell_state(kind), (type(self).__name__, kind)
        self.kind = kind
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.bias = flag(bias, "bias")
        self.dtype = as_dtype(dtype)
        self.backend = _backends.check_backend(backend)
        self._rng = _generator(seed)
        self._gates = GATES[kind]

    def _new_param(self, name: str, shape: tuple[int, ...]) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        self._register(name, sized_uniform(self._rng, bound, shape, self.dtype, name,
                                           f"input_size={self.input_size}, hidden_size={self.hidden_size}"))

    def _backend(self) -> Any:
        return _backends.get_backend(self.backend)

    def _state_pair(self, value: Any, arg: str, names: tuple[str, ...], shape: tuple[int, ...],
                    batch_axis: int | None, c_shape: tuple[int, ...] | None = None
                    ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """``value`` (an LSTM's pair, or one array) as ``(h, c)`` arrays of ``shape`` (c: of
        ``c_shape`` if given: an LSTM's projection makes h narrower), zeros where None; ``c`` is None
        for other kinds. ``arg``/``names`` name the argument and its parts in errors; for unbatched
        input (``batch_axis`` not None) a batch axis of 1 is inserted there."""
        c_shape = shape if c_shape is None else c_shape
        if batch_axis is None:  # the per-step hot path of cells: arrays that need nothing
            if self._has_c:
                if type(value) is tuple and len(value) == 2 and _ready(value[0], shape, self.dtype) \
                        and _ready(value[1], c_shape, self.dtype):
                    return value
            elif _ready(value, shape, self.dtype):
                return value, None
        if self._has_c:
            if value is None:
                value = (None, None)
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"{arg} of an {type(self).__name__} must be a pair ({names[0]}, {names[1]}) or None, "
                                f"got {type(value).__name__}")
            h = _zeros_if_none(value[0], shape, self.dtype, names[0])
            c = _zeros_if_none(value[1], c_shape, self.dtype, names[1])
        else:
            if isinstance(value, (tuple, list)):
                raise TypeError(f"{arg} of a {type(self).__name__} must be an array or None, "
                                f"not a {type(value).__name__}")
            h = _zeros_if_none(value, shape, self.dtype, names[0])
            c = None
        if batch_axis is not None:
            h = np.expand_dims(h, batch_axis)
            c = None if c is None else np.expand_dims(c, batch_axis)
        return h, c

    @property
    def input_forget(self) -> bool:
        """Whether the LSTM's forget gate is coupled to its input gate, f = 1 - i (kind lstm_cifg)."""
        return self.kind == "lstm_cifg"

    @property
    def mode(self) -> str:
        return "LSTM" if self._has_c else {"rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "gru": "GRU",
                                           "gru_orig": "GRU"}[self.kind]


# ----------------------------------------------------------------------------
# Sequence layers
# ----------------------------------------------------------------------------


class _RNNBase(_Recurrent):
    num_layers: int
    batch_first: bool
    dropout: float
    bidirectional: bool
    peepholes: bool = False  # the LSTM's (LSTM sets it)
    proj_size: int = 0  # the LSTM's (LSTM sets it before the parameters are made)
    recurrent_dropout: float = 0.0  # (a class default: layers pickled before it existed have no attribute)
    _dirs: int

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self._setup(kind, input_size, hidden_size, bias, dtype, backend, seed)
        self.num_layers = positive_int(num_layers, "num_layers")
        self.batch_first = bool(batch_first)
        self.dropout = fraction(dropout, "dropout")
        self.recurrent_dropout = fraction(recurrent_dropout, "recurrent_dropout", below_one=True)
        self.bidirectional = bool(bidirectional)
        self._dirs = 2 if self.bidirectional else 1
        G, H, P = self._gates, self.hidden_size, self._state_size
        for layer in range(self.num_layers):
            for d in range(self._dirs):
                sfx = self._suffix(layer, d)
                in_size = self.input_size if layer == 0 else P * self._dirs
                self._new_param("weight_ih" + sfx, (G * H, in_size))
                self._new_param("weight_hh" + sfx, (G * H, P))
                if self.bias:
                    self._new_param("bias_ih" + sfx, (G * H,))
                    self._new_param("bias_hh" + sfx, (G * H,))
                if self.proj_size:
                    self._new_param("weight_hr" + sfx, (P, H))

    @property
    def _state_size(self) -> int:
        """The units of h (and of each direction's output): proj_size with a projection, else hidden_size."""
        return self.proj_size or self.hidden_size

    # what the most recent forward of this thread kept for backward
    @property
    def _record(self) -> Any:
        return getattr(self._local, "record", None)

    @_record.setter
    def _record(self, value: Any) -> None:
        self._local.record = value

    @property
    def _record_note(self) -> str:
        return getattr(self._local, "note", "no forward has run yet (in this thread)")

    @_record_note.setter
    def _record_note(self, value: str) -> None:
        self._local.note = value

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def _weights(self, layer: int, direction: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None,
                                                              NDArray[Any] | None]:
        sfx = self._suffix(layer, direction)
        p = self._params
        if self.bias:
            return p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx], p["bias_hh" + sfx]
        return p["weight_ih" + sfx], p["weight_hh" + sfx], None, None

    def _variants(self, layer: int, direction: int) -> dict[str, NDArray[Any] | None]:
        """The LSTM's variant weights of a layer and direction as ``layer_forward``'s keyword
        arguments: ``peep`` (the peepholes) and ``w_hr`` (the projection), None where absent."""
        sfx = self._suffix(layer, direction)
        return dict(peep=self._params["weight_peep" + sfx] if self.peepholes else None,
                    w_hr=self._params["weight_hr" + sfx] if self.proj_size else None)

    def flatten_parameters(self) -> None:
        """No-op, for PyTorch compatibility (parameters are always contiguous here)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.kind == "rnn_relu":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.kind == "gru_orig":
            s += ", linear_before_reset=False"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s + _lstm_variants_repr(self) + f", dtype={self.dtype}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # forward -----------------------------------------------------------
    def _state_shapes(self, batch: int, unbatched: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of (h, c) over all layers and directions: [L*D, B, P] and [L*D, B, H] (without B
        when unbatched; P = H without a projection)."""
        lead = (self.num_layers * self._dirs,) if unbatched else (self.num_layers * self._dirs, batch)
        return lead + (self._state_size,), lead + (self.hidden_size,)

    def _states(self, hx: Any, batch: int, unbatched: bool) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """Initial states as [L*D, B, P] and [L*D, B, H] arrays (zeros where not given)."""
        h_shape, c_shape = self._state_shapes(batch, unbatched)
        return self._state_pair(hx, "hx", ("h_0", "c_0"), h_shape, 1 if unbatched else None, c_shape)

    def forward(self, x: ArrayLike, hx: Any = None, lengths: ArrayLike | None = None) -> tuple[NDArray[Any], Any]:
        """Run the stack over ``x``.

        ``x``: ``[T, B, I]`` (``[B, T, I]`` with batch_first) or unbatched ``[T, I]``.
        ``hx``: ``h_0 [L*D, B, H]`` (LSTM: a pair ``(h_0, c_0)``; with ``proj_size`` h_0 has
        proj_size units), or None for zeros.
        ``lengths``: ``[B]`` integers in [1, T] for a padded batch, or None.
        Returns ``out, h_n`` (LSTM: ``out, (h_n, c_n)``).
        """
        backend = self._backend()
        x_arg = x
        x = float_array(x, "x", self.dtype)
        if x.ndim != 2 and x.ndim != 3:
            raise ValueError(f"x must have shape (*, *) or (*, *, *), got {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have input_size={self.input_size} features in its last axis, got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x3 = x[:, None, :]
        elif self.batch_first:
            x3 = np.ascontiguousarray(x.transpose(1, 0, 2))
        else:
            x3 = x
        T, B = x3.shape[0], x3.shape[1]
        if T == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        if B == 0:
            raise ValueError(f"x must have at least one sequence in its batch, got shape {x.shape}")
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths applies to a batch; x is unbatched ([T, I])")
            lengths = lengths_array(lengths, B, T)
            if np.all(lengths == T):
                lengths = None  # nothing is padded
        h0, c0 = self._states(hx, B, unbatched)

        keep = is_grad_enabled()
        if keep:
            # What backward reads must stay what this forward read: private copies of the caller's
            # arrays (x, states, lengths; a backend keeps references), parameters by version.
            if x3 is x_arg or not x3.flags.owndata:
                x3 = x3.copy()
            h0 = h0.copy()
            c0 = None if c0 is None else c0.copy()
            lengths = None if lengths is None else lengths.copy()
        self._record = None
        self._record_note = "the last forward failed"
        kind, P, D, L = self.kind, self._state_size, self._dirs, self.num_layers  # P: h's units
        drop = self.dropout if (self.training and L > 1) else 0.0
        rdrop = self.recurrent_dropout if self.training else 0.0
        inp = x3
        h_n = np.empty((L * D, B, P), dtype=self.dtype)
        c_n = np.empty((L * D, B, self.hidden_size), dtype=self.dtype) if has_cell_state(kind) else None
        # Each direction writes its half of the layer's [T, B, D*P] output in place (contract:
        # layer_forward's out); with batch_first the last layer writes straight into the batch-major
        # result. One direction, time-major: the backend allocates the output (the cpp backend from
        # its block cache). The layers above the first read their input from the buffer the layer
        # below wrote (dense rows: the kernels' input projection reads x at one row stride).
        batch_major = self.batch_first and not unbatched
        workspaces, masks = [], []
        for layer in range(L):
            if layer == L - 1 and batch_major:
                result = np.empty((B, T, D * P), dtype=self.dtype)
                out = result.transpose(1, 0, 2)
            else:
                out = np.empty((T, B, D * P), dtype=self.dtype) if D > 1 else None
            for d in range(D):
                i = layer * D + d
                # variational recurrent dropout: one mask per sequence, layer and direction
                hmask = _dropout_mask(self._rng, (B, P), rdrop, self.dtype) if rdrop > 0 else None
                o, h, c, ws = backend.layer_forward(
                    kind, inp, h0[i], None if c0 is None else c0[i], *self._weights(layer, d), lengths, bool(d), keep,
                    out=None if out is None else out[:, :, d * P:(d + 1) * P], hmask=hmask, **self._variants(layer, d))
                h_n[i] = h
                if c_n is not None:
                    c_n[i] = c
                workspaces.append(ws)
            if out is None:
                out = o
            mask = None
            if drop > 0 and layer < L - 1:
                mask = _dropout_mask(self._rng, out.shape, drop, self.dtype)
                out *= mask
            masks.append(mask)
            inp = out

        if keep:
            self._record = dict(backend=backend, ws=workspaces, masks=masks, shape=x.shape, T=T, B=B,
                                unbatched=unbatched, version=self._version)
        else:
            self._record_note = "the last forward ran under fastrnn.no_grad() and kept nothing for backward"

        if batch_major:
            out = result
        if unbatched:
            out, h_n = out[:, 0, :], h_n[:, 0, :]
            c_n = None if c_n is None else c_n[:, 0, :]
        if has_cell_state(kind):
            return out, (h_n, c_n)
        return out, h_n

    # backward ----------------------------------------------------------
    def _backward_into_grads(self, backend: Any, sfx: str, args: Any) -> Any:
        """``backend.layer_backward(*args)`` for the parameters named with ``sfx``, its gradients
        added into ``self.grads``. The weight gradients go straight in (CONTRACT.md's ``acc``: no
        temporary of each weight's size at the peak of the step) when the gradient lock is free
        and the running gradients are plain arrays; else fresh ones are added afterwards."""
        acc = tuple(self.grads["weight_" + w + sfx] for w in ("ih", "hh"))
        ready = all(_ready(a, self._params["weight_" + w + sfx].shape, self.dtype) and a.flags.writeable
                    and a.flags.aligned for a, w in zip(acc, ("ih", "hh"))) \
            and not np.may_share_memory(acc[0], acc[1])  # e.g. one array for both (tied gradients)
        if ready and self._grad_lock.acquire(blocking=False):
            try:
                grads = backend.layer_backward(*args, acc=acc)
                for name, g in _param_grads(grads, sfx, self.bias)[2:]:  # the weights' went in through acc
                    self.grads[name] += g
            finally:
                self._grad_lock.release()
        else:
            grads = backend.layer_backward(*args)
            self._accumulate(_param_grads(grads, sfx, self.bias))
        return grads

    def backward(self, grad_output: ArrayLike, grad_hx: Any = None) -> tuple[NDArray[Any], Any]:
        """Differentiate the most recent forward.

        ``grad_output``: gradient w.r.t. ``out`` (same shape), or None for zero.
        ``grad_hx``: gradient w.r.t. ``h_n`` (LSTM: a pair for ``(h_n, c_n)``,
        either may be None), or None for zero.
        Returns ``dx, dh_0`` (LSTM: ``dx, (dh_0, dc_0)``) in the layouts of
        the forward's ``x`` and states; parameter gradients accumulate in
        ``self.grads``.

        Raises :class:`GradientError` if parameters were replaced since the
        forward. If it fails (bad argument, no memory, no thread) before any
        part of its gradients reached ``self.grads``, the forward stays
        recorded and backward may be retried; after, the forward is consumed
        and a retry raises :class:`GradientError` saying why.
        """
        rec = self._record
        if rec is None:
            raise GradientError(f"{type(self).__name__}.backward: nothing to differentiate ({self._record_note})")
        self._check_version(rec["version"])
        P, D, L = self._state_size, self._dirs, self.num_layers  # P: h's units
        T, B, unbatched = rec["T"], rec["B"], rec["unbatched"]
        out_shape = rec["shape"][:-1] + (D * P,)
        state_shape, c_shape = self._state_shapes(B, unbatched)

        # grad_out is read in place by each direction (contract: its rows at any strides); None
        # stays None (a zero gradient, with no array of zeros).
        g = None if grad_output is None else float_array(grad_output, "grad_output", self.dtype, [out_shape])
        if g is not None:
            if not g.flags.aligned:
                g = g.copy()
            if unbatched:
                g = g[:, None, :]
            elif self.batch_first:
                g = g.transpose(1, 0, 2)
        gh, gc = self._state_pair(grad_hx, "grad_hx", ("grad_h_n", "grad_c_n"), state_shape,
                                  1 if unbatched else None, c_shape)

        backend = rec["backend"]
        dh0 = np.empty((L * D, B, P), dtype=self.dtype)
        dc0 = np.empty((L * D, B, self.hidden_size), dtype=self.dtype) if gc is not None else None
        try:
            dx = self._backward_layers(rec, backend, g, gh, gc, dh0, dc0, self.batch_first and not unbatched)
        except BaseException as exc:
            # A backend's failed call leaves its workspace usable (retry), unless it had begun
            # adding into self.grads (PartialBackwardError), as has an earlier call that succeeded.
            if rec.get("started") or isinstance(exc, PartialBackwardError):
                self._record = None
                self._record_note = ("the last backward failed part way (self.grads holds part of its gradients); "
                                     "run the forward again")
            raise
        self._record = None
        self._record_note = "backward already consumed the last forward"
        if unbatched:
            dx, dh0 = dx[:, 0, :], dh0[:, 0, :]
            dc0 = None if dc0 is None else dc0[:, 0, :]
        elif self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))  # no copy if the sum below wrote it batch-major
        if self._has_c:
            return dx, (dh0, dc0)
        return dx, dh0

    def _backward_layers(self, rec: Any, backend: Any, g: Any, gh: Any, gc: Any, dh0: Any, dc0: Any,
                         batch_major: bool) -> Any:
        """The stack's backward, last layer first; sets ``rec['started']`` once a backend call succeeded.
        ``g``: the gradient of the top layer's output ([T, B, D*P] rows) or None for zero. Returns the
        gradient of x as [T, B, I] (with ``batch_major`` and two directions, a view of a [B, T, I] array)."""
        P, D, L = self._state_size, self._dirs, self.num_layers  # P: h's units
        for layer in range(L - 1, -1, -1):
            dx = None
            for d in range(D):
                i = layer * D + d
                grads = self._backward_into_grads(
                    backend, self._suffix(layer, d),
                    (rec["ws"][i], None if g is None else g[:, :, d * P:(d + 1) * P], np.ascontiguousarray(gh[i]),
                     None if gc is None else np.ascontiguousarray(gc[i])))
                rec["started"] = True
                dh0[i] = grads["h0"]
                if dc0 is not None:
                    dc0[i] = grads["c0"]
                if dx is None:
                    dx = grads["x"]  # freshly allocated by the backend: ours to add into
                elif layer == 0 and batch_major:  # the sum written in the caller's layout
                    T, B, I = dx.shape
                    dx = np.add(dx, grads["x"], out=np.empty((B, T, I), dtype=self.dtype).transpose(1, 0, 2))
                else:
                    dx += grads["x"]
            if layer > 0:
                mask = rec["masks"][layer - 1]
                if mask is not None:
                    dx *= mask
                g = dx
        return dx


class RNN(_RNNBase):
    """Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu), as ``torch.nn.RNN``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(_rnn_kind(nonlinearity), input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, recurrent_dropout=recurrent_dropout, dtype=dtype, backend=backend, seed=seed)


class LSTM(_RNNBase):
    """LSTM with gates (i, f, g, o), as ``torch.nn.LSTM``.

    ``proj_size=P`` (0 < P < hidden_size; PyTorch's LSTMP, Sak et al.): the state is projected,
    ``h' = W_hr (o * tanh(c'))``, so h_0, h_n and each direction's output have P units (c keeps
    hidden_size), ``weight_hh`` is ``[4 * hidden_size, P]``, the layers above the first take
    ``P * directions`` inputs, and each layer and direction has ``weight_hr_l{k}[_reverse]`` of
    shape ``[P, hidden_size]``: PyTorch's names, shapes and order, so state_dicts map one to one.

    ``peepholes=True``: the gates also see the cell state through per-unit weights (Gers &
    Schmidhuber; ONNX's ``P``): ``i = sigmoid(... + p_i * c)``, ``f = sigmoid(... + p_f * c)``,
    ``o = sigmoid(... + p_o * c')``. Each layer and direction then has a parameter
    ``weight_peep_l{k}[_reverse]`` of shape ``[3 * hidden_size]``, the blocks ``(p_i, p_f, p_o)``
    (ONNX orders them i, o, f; ``fastrnn.onnx`` converts), initialised like the other weights
    after them (so a seed gives the same other weights as without peepholes).

    ``input_forget=True``: the input and forget gates are coupled, ``f = 1 - i`` (ONNX's
    ``input_forget=1``; the CIFG of Greff et al., "LSTM: A Search Space Odyssey"). The parameters
    keep their shapes, so ONNX's and PyTorch's layouts load unchanged, but the forget gate's rows
    of the weights and biases (rows ``H:2H``) and ``p_f`` take no part in the results: their
    gradients are zero. The kind is ``"lstm_cifg"``.
    """

    _has_c = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, *,
                 peepholes: bool = False, input_forget: bool = False, recurrent_dropout: float = 0.0,
                 dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        peepholes = flag(peepholes, "peepholes")
        kind = _lstm_kind(input_forget)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or proj_size < 0:
            raise ValueError(f"proj_size must be an integer >= 0 (0: no projection), got {proj_size!r}")
        if proj_size and isinstance(hidden_size, (int, np.integer)) and proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}")
        self.proj_size = int(proj_size)
        super().__init__(kind, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         recurrent_dropout=recurrent_dropout, dtype=dtype, backend=backend, seed=seed)
        self.peepholes = peepholes
        if self.peepholes:
            for layer in range(self.num_layers):
                for d in range(self._dirs):
                    self._new_param("weight_peep" + self._suffix(layer, d), (PEEPHOLES * self.hidden_size,))


class GRU(_RNNBase):
    """GRU with gates (r, z, n), as ``torch.nn.GRU``.

    ``linear_before_reset=True`` (PyTorch, cuDNN, ONNX's ``linear_before_reset=1``):
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; False: the original paper's
    ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 linear_before_reset: bool = True, recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None,
                 backend: str | None = None, seed: int | np.random.Generator | None = None) -> None:
        self.linear_before_reset = bool(linear_before_reset)
        super().__init__(_gru_kind(linear_before_reset), input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, recurrent_dropout=recurrent_dropout, dtype=dtype, backend=backend,
                         seed=seed)


# ----------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------


# What a cell call keeps for backward lives as long as an array it returned
# (as PyTorch frees a step's graph with its outputs). A call holds the arrays
# it was given, so a chain of calls (h = cell(x, h)) lives while its latest
# output does; backward moves what a consumed call held to its tape, where it
# stays until that tape is empty at the next recorded call (or clear_tape),
# so the chain's backward can go on through older calls (of this cell or of
# another that fed it). An inference loop that drops its outputs keeps O(1)
# calls.
#
# Liveness is polled through plain weak references (no callbacks: a Python
# callback per output costs more than the rest of the bookkeeping): each
# recorded call checks the newest entries of its tape, going deeper while it
# finds released ones, and the whole tape is swept whenever it has doubled
# since the last sweep (amortised O(1) per call).


class _Step:
    """One recorded cell call: the backend's workspace and what backward needs to interpret it.

    ``state``: 1 recorded (its outputs may be alive), 0 released (all gone; kept as a marker),
    -1 consumed by backward or cleared."""

    __slots__ = ("backend", "ws", "unbatched", "B", "version", "state", "refs", "inputs")
    backend: Any
    ws: Any
    unbatched: bool
    B: int
    version: int
    state: int
    refs: tuple[weakref.ref[Any], ...]
    inputs: Any

    def alive(self) -> bool:
        for r in self.refs:
            if r() is not None:
                return True
        return False

    def release(self) -> None:
        """Every output is gone: drop what backward would have needed, and the inputs held."""
        self.state = 0
        self.ws = self.inputs = None


class _Tape:
    """One thread's recorded calls of one cell, oldest first; backward takes the last (LIFO).

    A released call stays as a marker, so that a backward reaching it raises instead of
    silently differentiating an older call; a run of markers is kept as one, and markers with
    nothing below them are dropped. ``held``: inputs of consumed calls (see above)."""

    __slots__ = ("steps", "next_sweep", "held")

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self.next_sweep = 64
        self.held: list[Any] = []

    def __len__(self) -> int:
        """The number of entries (recorded calls and markers) after a sweep."""
        self.sweep(None)
        return len(self.steps)

    def sweep(self, depth: int | None) -> None:
        """Release the calls whose outputs are all gone among the newest ``depth`` entries (None:
        all) and ``depth`` more below each one released, newest first (a released call drops the
        inputs it held, which older entries then find gone in the same pass, so a dropped
        chain is freed at once); then merge the markers."""
        steps = self.steps
        n = len(steps)
        first = n  # the oldest entry released in this pass
        i = n - 1
        while i >= 0 and (depth is None or i >= first - depth):  # a release widens the window
            st = steps[i]
            if st.state == 1 and not st.alive():
                st.release()
                first = i
            i -= 1
        if first < n:
            start = max(first - 1, 0)
            below_marker = start == 0 or steps[start - 1].state == 0
            tail = []
            for st in steps[start:]:
                if st.state == 1:
                    tail.append(st)
                    below_marker = False
                elif not below_marker:
                    tail.append(st)
                    below_marker = True
            steps[start:] = tail
        if depth is None:
            self.next_sweep = 2 * len(steps) + 64

    def clear(self) -> None:
        for st in self.steps:
            st.state = -1
            st.ws = st.inputs = None
        self.steps.clear()
        self.held.clear()


class _CellBase(_Recurrent):
    peepholes: bool = False  # the LSTM's (LSTMCell sets it)
    recurrent_dropout: float = 0.0  # (a class default: cells pickled before it existed have no attribute)

    def __init__(self, kind: str, input_size: int, hidden_size: int, bias: bool = True, *,
                 recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self._setup(kind, input_size, hidden_size, bias, dtype, backend, seed)
        self.recurrent_dropout = fraction(recurrent_dropout, "recurrent_dropout", below_one=True)
        G, H = self._gates, self.hidden_size
        self._new_param("weight_ih", (G * H, self.input_size))
        self._new_param("weight_hh", (G * H, H))
        if self.bias:
            self._new_param("bias_ih", (G * H,))
            self._new_param("bias_hh", (G * H,))

    @property
    def _tape(self) -> _Tape:
        """This thread's recorded forward calls (LIFO)."""
        tape = getattr(self._local, "tape", None)
        if tape is None:
            tape = self._local.tape = _Tape()
        return tape

    def __repr__(self) -> str:
        rdrop = f", recurrent_dropout={self.recurrent_dropout}" if self.recurrent_dropout else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias}"
                f"{_lstm_variants_repr(self)}{rdrop}, dtype={self.dtype})")

    def reset_dropout_mask(self) -> None:
        """Start a new sequence for ``recurrent_dropout``: the next training-mode step (in this
        thread) draws a new mask, which the steps after it share. A step given no ``hx`` starts a
        sequence too; call this where a sequence starts from a given state."""
        self._local.hmask = None

    def _sequence_mask(self, B: int, first: bool) -> NDArray[Any]:
        """This thread's recurrent-dropout mask ``[B, hidden_size]`` for the current sequence, drawn
        from the cell's generator at its ``first`` step (or the first after a reset)."""
        mask: NDArray[Any] = _cell_mask(
            getattr(self._local, "hmask", None), first, B,
            lambda: _dropout_mask(self._rng, (B, self.hidden_size), self.recurrent_dropout, self.dtype))
        self._local.hmask = mask
        return mask

    def _weights(self) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, NDArray[Any] | None]:
        p = self._params
        if self.bias:
            return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        return p["weight_ih"], p["weight_hh"], None, None

    def clear_tape(self) -> None:
        """Forget this thread's recorded forward calls that were never back-propagated."""
        self._tape.clear()

    def forward(self, x: ArrayLike, hx: Any = None) -> Any:
        """One step: ``x [B, I]`` or ``[I]``; returns ``h'`` (LSTM: ``(h', c')``).

        With gradients enabled the call is recorded for :meth:`backward` (per
        thread) with private copies of ``x`` and the states, until backward
        consumes it or every array it returned is gone: keep the returned
        arrays (or a later step's, if that step took them as input) until
        backward. Under ``fastrnn.no_grad()`` nothing is kept.
        """
        backend = self._backend()
        x_arg = x
        x = float_array(x, "input", self.dtype)
        xs = x.shape
        if len(xs) == 2 and xs[1] == self.input_size and xs[0] > 0:  # the common case, checked once
            unbatched, x2, B = False, x, xs[0]
        else:
            if x.ndim != 1 and x.ndim != 2:
                raise ValueError(f"input must have shape (*,) or (*, *), got {xs}")
            if xs[-1] != self.input_size:
                raise ValueError(f"input must have input_size={self.input_size} features in its last axis, got shape {xs}")
            if x.ndim == 2:  # the right shape but no rows
                raise ValueError(f"input must have at least one row, got shape {xs}")
            unbatched, x2, B = True, x[None, :], 1
        shape = (self.hidden_size,) if unbatched else (B, self.hidden_size)
        h, c = self._state_pair(hx, "hx", ("h", "c") if self._has_c else ("hx",), shape,
                                0 if unbatched else None)
        keep = is_grad_enabled()  # the backend keeps copies of x, h, c (contract.Backend.cell_forward)
        peep = self._params["weight_peep"] if self.peepholes else None
        hmask = self._sequence_mask(B, hx is None) if self.recurrent_dropout and self.training else None
        h_new, c_new, ws = backend.cell_forward(self.kind, x2, h, c, *self._weights(), keep, peep, hmask)
        if unbatched:
            h_new = h_new[0]
            c_new = None if c_new is None else c_new[0]
        if keep:
            self._record_step(backend, ws, unbatched, B, (x_arg, hx), h_new, c_new)
        return (h_new, c_new) if self._has_c else h_new

    def _record_step(self, backend: Any, ws: Any, unbatched: bool, B: int, inputs: Any, h_new: NDArray[Any],
                     c_new: NDArray[Any] | None) -> None:
        tape = self._tape
        steps = tape.steps
        n = len(steps)
        if n:  # the sweep, inlined for the common cases (this runs once per step)
            if n >= tape.next_sweep:
                tape.sweep(None)
            else:
                top = steps[-1]
                r = top.refs
                if top.state == 1 and r[0]() is None and (len(r) == 1 or r[1]() is None):
                    if n == 1:  # a loop that drops its outputs
                        top.release()
                        steps.clear()
                    else:
                        tape.sweep(2)
                elif n > 1:
                    below = steps[-2]
                    r = below.refs
                    if below.state == 1 and r[0]() is None and (len(r) == 1 or r[1]() is None):
                        tape.sweep(2)
        if not steps and tape.held:
            tape.held.clear()
        st = _Step()
        st.backend, st.ws, st.unbatched, st.B, st.version = backend, ws, unbatched, B, self._version
        st.state, st.inputs = 1, inputs
        st.refs = (weakref.ref(h_new),) if c_new is None else (weakref.ref(h_new), weakref.ref(c_new))
        steps.append(st)

    def backward(self, grad: Any) -> tuple[NDArray[Any], Any]:
        """Back-propagate the most recent unconsumed forward call (LIFO).

        ``grad``: gradient w.r.t. ``h'`` (LSTM: a pair for ``(h', c')``, either
        may be None). Returns ``dx, dh`` (LSTM: ``dx, (dh, dc)``); parameter
        gradients accumulate in ``self.grads``. Raises :class:`GradientError`
        if that call's outputs were all dropped or parameters were replaced
        since; if it fails before computing (bad argument, no memory), the
        call stays recorded.
        """
        tape = self._tape
        tape.sweep(3)
        if not tape.steps:
            raise GradientError(f"{type(self).__name__}.backward: no recorded forward call to differentiate "
                                "(none ran, all were consumed, or they ran under fastrnn.no_grad())")
        st = tape.steps[-1]
        if st.state != 1:
            raise GradientError(
                f"{type(self).__name__}.backward: every array the most recent recorded forward call returned (and "
                "every later call that took them as input) was dropped before backward, which freed what it kept; "
                "keep the returned arrays until backward (clear_tape() forgets the calls left on the tape)")
        self._check_version(st.version)
        shape = (self.hidden_size,) if st.unbatched else (st.B, self.hidden_size)
        gh, gc = self._state_pair(grad, "grad", ("grad_h", "grad_c"), shape, 0 if st.unbatched else None)
        grads = st.backend.cell_backward(st.ws, gh, gc)
        tape.steps.pop()
        st.state = -1
        tape.held.append(st.inputs)  # the older calls of the chain that fed this one stay for their backward
        st.ws = st.inputs = None
        self._accumulate(_param_grads(grads, "", self.bias))  # weight_peep too, with peepholes
        dx, dh, dc = grads["x"], grads["h"], grads["c"]
        if st.unbatched:
            dx, dh = dx[0], dh[0]
            dc = None if dc is None else dc[0]
        return (dx, (dh, dc)) if self._has_c else (dx, dh)


class RNNCell(_CellBase):
    """One Elman RNN step, as ``torch.nn.RNNCell``; ``recurrent_dropout=p`` as in the module's
    docstring (every cell)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(_rnn_kind(nonlinearity), input_size, hidden_size, bias, recurrent_dropout=recurrent_dropout,
                         dtype=dtype, backend=backend, seed=seed)


class LSTMCell(_CellBase):
    """One LSTM step, as ``torch.nn.LSTMCell``; ``peepholes=True`` as in :class:`LSTM` (one
    parameter ``weight_peep`` of shape ``[3 * hidden_size]``, the blocks ``(p_i, p_f, p_o)``),
    ``input_forget=True`` (f = 1 - i) as in :class:`LSTM`, ``recurrent_dropout=p`` as in
    :class:`RNNCell`."""

    _has_c = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, peepholes: bool = False,
                 input_forget: bool = False, recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None,
                 backend: str | None = None, seed: int | np.random.Generator | None = None) -> None:
        peepholes = flag(peepholes, "peepholes")
        kind = _lstm_kind(input_forget)
        super().__init__(kind, input_size, hidden_size, bias, recurrent_dropout=recurrent_dropout, dtype=dtype,
                         backend=backend, seed=seed)
        self.peepholes = peepholes
        if self.peepholes:
            self._new_param("weight_peep", (PEEPHOLES * self.hidden_size,))


class GRUCell(_CellBase):
    """One GRU step, as ``torch.nn.GRUCell`` (``linear_before_reset`` as in :class:`GRU`,
    ``recurrent_dropout=p`` as in :class:`RNNCell`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, linear_before_reset: bool = True,
                 recurrent_dropout: float = 0.0, dtype: DTypeLike | None = None, backend: str | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self.linear_before_reset = bool(linear_before_reset)
        super().__init__(_gru_kind(linear_before_reset), input_size, hidden_size, bias,
                         recurrent_dropout=recurrent_dropout, dtype=dtype, backend=backend, seed=seed)
