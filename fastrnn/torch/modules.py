"""``torch.nn.Module``s with ``torch.nn``'s exact interface whose math runs in fastrnn's kernels.

The layers subclass ``torch.nn.RNNBase`` (not ``nn.LSTM`` & co: TorchDynamo
refuses to trace anything that is an ``nn.LSTM``/``nn.GRU``/``nn.RNN``, and these
modules are meant to compile), so parameters, their names, shapes,
initialisation, ``state_dict`` keys, ``reset_parameters`` and ``extra_repr``
are PyTorch's own. The cells subclass ``nn.LSTMCell``, ``nn.GRUCell`` and
``nn.RNNCell`` directly. Only ``forward`` differs: it validates the input,
then runs each layer and direction through :func:`fastrnn.torch._ops.layer`
(one step of a cell through :func:`fastrnn.torch._ops.cell`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from numpy.typing import NDArray
from torch.nn.utils.rnn import PackedSequence

from .. import backends as _backends
from .._validate import flag, fraction
from ..backends.contract import PEEPHOLES, has_cell_state
from ..rnn import _cell_mask, _lstm_kind, _lstm_variants_repr
from . import _ops

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "InputError", "InputTypeError"]

_KIND = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_DTYPES = (torch.float32, torch.float64)


class InputError(ValueError, RuntimeError):
    """Bad input (shape, device): a ``ValueError`` as in fastrnn's NumPy API, and the ``RuntimeError``
    PyTorch raises for the same mistakes."""


class InputTypeError(TypeError, RuntimeError):
    """Input of the wrong dtype: a ``TypeError`` as in fastrnn's NumPy API, and a ``RuntimeError``
    as PyTorch raises."""


def check_supported(dtype: torch.dtype, device: torch.device, what: str) -> None:
    """Raise unless ``dtype``/``device`` are what fastrnn's kernels run: CPU float32 or float64."""
    if device.type != "cpu":
        raise InputError(f"{what} is on device {device}; fastrnn.torch runs on the CPU only "
                         "(keep torch.nn's module for other devices, or move the module and its input with .cpu())")
    if dtype not in _DTYPES:
        raise InputTypeError(f"{what} has dtype {dtype}; fastrnn.torch computes in torch.float32 or torch.float64 "
                             "(convert with .float() or .double())")


def _check_tensor(t: Any, name: str, like: torch.Tensor) -> None:
    """``t`` is a tensor on ``like``'s device with ``like``'s dtype (the module's parameters)."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype is not like.dtype or t.device != like.device:
        check_supported(t.dtype, t.device, name)
        check_supported(like.dtype, like.device, "the module's parameters")
        if t.dtype is not like.dtype:
            raise InputTypeError(f"{name} has dtype {t.dtype} but the module's parameters are {like.dtype}; convert "
                                 f"one of them explicitly ({name}.to({like.dtype}) or module.to({t.dtype}))")


def _check_state(t: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise InputError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


def _packed_layout(batch_sizes: torch.Tensor,
                   sorted_indices: torch.Tensor | None) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """Where each row of a PackedSequence's data sits in a padded ``[T*B]`` batch (original order),
    and each sequence's length (original order). Index arithmetic, no loop over sequences."""
    T, B = batch_sizes.shape[0], int(batch_sizes[0])
    slots = torch.arange(B)
    valid = slots[None, :] < batch_sizes[:, None]  # [T, B]: step t of sorted sequence b exists
    order = slots if sorted_indices is None else sorted_indices  # sorted slot -> original sequence
    rows = (torch.arange(T)[:, None] * B + order[None, :])[valid]  # packed order is t-major, then sorted slot
    lengths = torch.empty(B, dtype=torch.int64)
    lengths[order] = valid.sum(0)
    return T, B, rows, lengths


class _Backend:
    """The ``backend=`` keyword shared by every module ('' is fastrnn's own choice, get_backend), and
    the cache of the NumPy views of the module's weights (:class:`fastrnn.torch._ops.WeightViews`)."""

    backend: str
    _weight_views: _ops.WeightViews
    _kind: str  # the kind of the backend contract

    @property
    def input_forget(self) -> bool:
        """Whether the LSTM's forget gate is coupled to its input gate, f = 1 - i (kind lstm_cifg)."""
        return self._kind == "lstm_cifg"

    def _set_backend(self, backend: str | None) -> None:
        self.backend = _backends.check_backend(backend) or ""
        self._weight_views = _ops.WeightViews()

    def _weights(self, names: Sequence[str]) -> tuple[Any, ...]:
        """The tensors named ``names`` (parameters, or what stands in for them), as ``getattr`` finds
        them. nn.Module's ``__getattr__`` costs about a microsecond a name; for this package's own
        classes, with nothing in the instance's ``__dict__`` under those names (torch.func.functional_call
        puts its tensors there; torch.nn.utils.parametrize makes a subclass), the parameters dict is
        what it would return."""
        d = self.__dict__
        if type(self) in _OWN_CLASSES:
            for n in names:
                if n in d:
                    break
            else:
                params = d["_parameters"]
                try:
                    return tuple(params[n] for n in names)
                except KeyError:  # deleted: getattr raises torch's error
                    pass
        return tuple(getattr(self, n) for n in names)

    def _views(self, weights: tuple[torch.Tensor | None, ...]) -> tuple[NDArray[Any] | None, ...] | None:
        """The NumPy views of ``weights`` from the cache; None under torch.compile/export (the custom
        operators take the tensors)."""
        return None if torch.compiler.is_compiling() else self._weight_views.get(weights)


# ---------------------------------------------------------------------------
# Sequence layers
# ---------------------------------------------------------------------------


def _dropout_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """Inverted dropout's mask of ``shape`` from torch's generator, of ``like``'s dtype and device: each
    element kept with probability 1-p and scaled by 1/(1-p)."""
    return torch.bernoulli(like.new_full(shape, 1 - p)).div_(1 - p)


def _add_peepholes(module: nn.Module, names: Sequence[str], hidden_size: int) -> None:
    """Register the LSTM's peephole weights ``names`` (each ``[3 * hidden_size]``, blocks p_i, p_f,
    p_o), on the device and dtype of ``weight_hh``, initialised as torch initialises the others:
    U(-1/sqrt(H), 1/sqrt(H))."""
    like: torch.Tensor = getattr(module, "weight_hh" if hasattr(module, "weight_hh") else "weight_hh_l0")
    bound = 1.0 / hidden_size ** 0.5
    for name in names:
        p = nn.Parameter(torch.empty(PEEPHOLES * hidden_size, dtype=like.dtype, device=like.device))
        nn.init.uniform_(p, -bound, bound)
        module.register_parameter(name, p)


class _RNNBase(nn.RNNBase, _Backend):
    """``torch.nn.RNNBase``'s parameters with fastrnn's forward."""

    _peep_names: tuple[str, ...] = ()  # the LSTM's peephole weights, one per layer and direction
    peepholes = False  # (class defaults: modules pickled before these existed have no attribute)
    recurrent_dropout = 0.0

    def __init__(self, mode: str, *args: Any, backend: str | None = None, recurrent_dropout: float = 0.0,
                 **kwargs: Any) -> None:
        rdrop = fraction(recurrent_dropout, "recurrent_dropout", below_one=True)
        super().__init__(mode, *args, **kwargs)
        self.recurrent_dropout = rdrop
        self._set_backend(backend)
        self._kind = _KIND[mode]

    def flatten_parameters(self) -> None:
        """No-op: fastrnn reads each parameter where it is (nothing to flatten for cuDNN)."""

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        return s + _lstm_variants_repr(self)

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002 - torch.nn's argument name
        # P: the units of h and of each direction's output (proj_size with a projection); c keeps hidden_size
        kind, P, L = self._kind, self.proj_size or self.hidden_size, self.num_layers
        D = 2 if self.bidirectional else 1
        lstm = has_cell_state(kind)
        weights = self._weights(self._flat_weights_names)
        w0 = weights[0]
        check_supported(w0.dtype, w0.device, "the module's parameters")
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_tensor(data, "input", w0)
            if data.dim() != 2 or data.shape[-1] != self.input_size:
                raise InputError(f"the PackedSequence's data must have shape (*, {self.input_size}), "
                                 f"got {tuple(data.shape)}")
            T, B, rows, lengths = _packed_layout(batch_sizes, sorted_indices)
            x = data.new_zeros((T * B, self.input_size)).index_copy(0, rows, data).view(T, B, self.input_size)
            if bool((lengths == T).all()):
                lengths = None  # nothing is padded
            batched = True
        else:
            _check_tensor(input, "input", w0)
            if input.dim() not in (2, 3):
                raise InputError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            if input.shape[-1] != self.input_size:
                raise InputError(f"input must have input_size={self.input_size} features in its last axis, "
                                 f"got shape {tuple(input.shape)}")
            batched = input.dim() == 3
            if not batched:
                x = input.unsqueeze(1)
            elif self.batch_first:
                x = input.transpose(0, 1)
            else:
                x = input
            T, B = x.shape[0], x.shape[1]
            if T == 0 or B == 0:
                raise InputError(f"input must have at least one time step and one sequence, got shape "
                                 f"{tuple(input.shape)}")
            x = x.contiguous()

        state_shape, c_shape = (L * D, B, P), (L * D, B, self.hidden_size)
        if hx is None:
            h0 = x.new_zeros(state_shape)
            c0 = (h0 if c_shape == state_shape else x.new_zeros(c_shape)) if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise InputTypeError(f"hx of an LSTM must be a pair (h_0, c_0) or None, got {type(hx).__name__}")
                h0, c0 = hx
            else:
                if isinstance(hx, (tuple, list)):
                    raise InputTypeError(f"hx of a {type(self).__name__} must be a tensor or None, "
                                         f"not a {type(hx).__name__}")
                h0, c0 = hx, None
            for t, name in ((h0, "h_0"), (c0, "c_0")):
                if t is None:
                    continue
                _check_tensor(t, name, w0)
                if t.dim() != (3 if batched else 2):
                    raise InputError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, {name} should also "
                                     f"be {3 if batched else 2}-D but got a {t.dim()}-D tensor")
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = None if c0 is None else c0.unsqueeze(1)
            _check_state(h0, "h_0", state_shape)
            h0 = h0.contiguous()
            if c0 is not None:
                _check_state(c0, "c_0", c_shape)
                c0 = c0.contiguous()

        nw = 4 if self.bias else 2  # w_ih, w_hh (, b_ih, b_hh) of a layer and direction
        per = nw + (1 if self.proj_size else 0)  # then torch's w_hr
        views = self._views(weights)
        peeps = self._weights(self._peep_names) if self._peep_names else None
        rdrop = self.recurrent_dropout if self.training else 0.0
        drop = self.dropout if self.training else 0.0
        hs, cs = [], []
        inp = x
        out: Any  # a tensor; the PackedSequence returned for a packed input
        for layer in range(L):
            outs = []
            for d in range(D):
                i = layer * D + d
                w = weights[i * per:(i + 1) * per]
                b_ih, b_hh = (w[2], w[3]) if self.bias else (None, None)
                v = None if views is None else views[i * per:i * per + nw]
                v = v if v is None or self.bias else (v[0], v[1], None, None)
                hmask = None
                if rdrop > 0:  # one mask per sequence, layer and direction, from torch's generator
                    hmask = _dropout_mask(x, (B, P), rdrop)
                out, h, c = _ops.layer(kind, inp, h0[i], None if c0 is None else c0[i], w[0], w[1], b_ih, b_hh,
                                       lengths, d == 1, self.backend, v, None if peeps is None else peeps[i], hmask,
                                       w[nw] if self.proj_size else None)
                outs.append(out)
                hs.append(h)
                cs.append(c)
            inp = outs[0] if D == 1 else torch.cat(outs, 2)
            if drop > 0 and layer < L - 1:
                inp = nn.functional.dropout(inp, drop, True)

        out = inp
        h_n = torch.stack(hs)
        c_n = torch.stack(cs) if lstm else None
        if packed:
            out = PackedSequence(out.reshape(T * B, D * P).index_select(0, rows), batch_sizes, sorted_indices,
                                 unsorted_indices)
        elif not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return (out, (h_n, c_n)) if lstm else (out, h_n)


class LSTM(_RNNBase):
    """``torch.nn.LSTM`` on fastrnn's kernels.

    Same arguments as ``torch.nn.LSTM`` (``proj_size`` included: the projection runs inside the
    fused kernels) (plus keyword ``backend=``: 'auto', 'cpp', 'numba' or 'numpy').
    Keyword ``recurrent_dropout=p`` (LSTM, GRU, RNN; which ``torch.nn`` has not): in training mode one
    mask per sequence, layer and direction (``torch.bernoulli``: torch's generator) on the recurrent
    input, as :class:`fastrnn.LSTM`'s. Keyword ``peepholes=True`` (which ``torch.nn.LSTM`` has not) adds peephole weights
    ``weight_peep_l{k}[_reverse]`` of shape ``[3 * hidden_size]`` (p_i, p_f, p_o), as
    :class:`fastrnn.LSTM`'s; the other parameters and their initialisation stay ``torch.nn.LSTM``'s.
    Keyword ``input_forget=True`` couples the forget gate to the input gate, ``f = 1 - i``, as
    :class:`fastrnn.LSTM`'s (the parameters keep their shapes; the forget rows get zero gradient).
    """

    def __init__(self, *args: Any, backend: str | None = None, peepholes: bool = False, input_forget: bool = False,
                 **kwargs: Any) -> None:
        kind = _lstm_kind(input_forget)
        super().__init__("LSTM", *args, backend=backend, **kwargs)
        self._kind = kind
        self.peepholes = flag(peepholes, "peepholes")
        if self.peepholes:
            D = 2 if self.bidirectional else 1
            self._peep_names = tuple(f"weight_peep_l{k}" + ("_reverse" if d else "")
                                     for k in range(self.num_layers) for d in range(D))
            _add_peepholes(self, self._peep_names, self.hidden_size)


class GRU(_RNNBase):
    """``torch.nn.GRU`` on fastrnn's kernels (same arguments, plus keywords ``backend=`` and
    ``recurrent_dropout=``, see :class:`LSTM`)."""

    def __init__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, backend=backend, **kwargs)


class RNN(_RNNBase):
    """``torch.nn.RNN`` on fastrnn's kernels (same arguments, plus keywords ``backend=`` and
    ``recurrent_dropout=``, see :class:`LSTM`)."""

    def __init__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:  # torch.nn.RNN's positional order: input_size, hidden_size, num_layers, nonlinearity, ...
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_" + self.nonlinearity.upper(), *args, backend=backend, **kwargs)


# ---------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------


class _Cell(_Backend):
    """fastrnn's forward for ``torch.nn``'s cells (mixed in before the torch class)."""

    _kind = ""
    _has_c = False  # (LSTMCell: True)
    input_size: int  # the torch class's
    hidden_size: int
    training: bool

    _peep: tuple[str, ...] = ()  # ("weight_peep",): an LSTMCell with peepholes
    peepholes = False
    recurrent_dropout = 0.0  # (class defaults: modules pickled before these existed have no attribute)
    _hmask: torch.Tensor | None = None  # the current sequence's recurrent-dropout mask

    def _set_recurrent_dropout(self, p: Any) -> None:
        self.recurrent_dropout = fraction(p, "recurrent_dropout", below_one=True)

    def extra_repr(self) -> str:
        s: str = super().extra_repr()  # type: ignore[misc]  # the torch cell's (mixed in after this class)
        return s + (f", recurrent_dropout={self.recurrent_dropout}" if self.recurrent_dropout else "")

    def reset_dropout_mask(self) -> None:
        """Start a new sequence for ``recurrent_dropout``: the next training-mode step draws a new
        mask, which the steps after it share. A step given no ``hx`` starts a sequence too."""
        self._hmask = None

    def _sequence_mask(self, x: torch.Tensor, B: int, first: bool) -> torch.Tensor:
        """The current sequence's recurrent-dropout mask ``[B, hidden_size]``, drawn from torch's
        generator at its ``first`` step (or the first after a reset)."""
        mask: torch.Tensor = _cell_mask(self._hmask, first, B,
                                        lambda: _dropout_mask(x, (B, self.hidden_size), self.recurrent_dropout),
                                        InputError)
        self._hmask = mask
        return mask

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002 - torch.nn's argument name
        w_ih, w_hh, b_ih, b_hh = self._weights(_CELL_WEIGHTS)
        views = self._views((w_ih, w_hh, b_ih, b_hh))
        if self._peep or (self.recurrent_dropout and self.training):
            return self._forward_checked(input, hx, w_ih, w_hh, b_ih, b_hh, views)
        # the common case, checked at the least cost: a batch [B, I] and hx None or [B, H] states, all
        # CPU tensors of the weights' dtype; anything else takes _forward_checked
        dtype = w_ih.dtype
        if (type(input) is torch.Tensor and input.dtype is dtype and input.is_cpu and input.dim() == 2
                and w_ih.is_cpu and dtype in _DTYPES):
            B, I = input.shape
            if I == self.input_size and B:
                if hx is None:
                    h = input.new_zeros((B, self.hidden_size))
                    return self._step(input, h, h if self._has_c else None, w_ih, w_hh, b_ih, b_hh, views)
                if self._has_c:
                    if type(hx) is tuple and len(hx) == 2:
                        h, c = hx
                        if _state_ok(h, dtype, B, self.hidden_size) and _state_ok(c, dtype, B, self.hidden_size):
                            return self._step(input, h, c, w_ih, w_hh, b_ih, b_hh, views)
                elif _state_ok(hx, dtype, B, self.hidden_size):
                    return self._step(input, hx, None, w_ih, w_hh, b_ih, b_hh, views)
        return self._forward_checked(input, hx, w_ih, w_hh, b_ih, b_hh, views)

    def _step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor | None, b_hh: torch.Tensor | None,
              views: tuple[NDArray[Any] | None, ...] | None) -> Any:
        h_new, c_new = _ops.cell(self._kind, x, h, c, w_ih, w_hh, b_ih, b_hh, self.backend, views)
        return (h_new, c_new) if c is not None else h_new

    def _forward_checked(self, input: Any, hx: Any, w_ih: torch.Tensor, w_hh: torch.Tensor,  # noqa: A002
                         b_ih: torch.Tensor | None, b_hh: torch.Tensor | None,
                         views: tuple[NDArray[Any] | None, ...] | None) -> Any:
        """forward with every check and the less common forms (unbatched, strided)."""
        kind, H = self._kind, self.hidden_size
        lstm = has_cell_state(kind)
        check_supported(w_ih.dtype, w_ih.device, "the module's parameters")
        _check_tensor(input, "input", w_ih)
        dim = input.dim()
        if dim != 2 and dim != 1:
            raise InputError(f"{type(self).__name__}: Expected input to be 1D or 2D, got {dim}D instead")
        if input.shape[-1] != self.input_size:
            raise InputError(f"input must have input_size={self.input_size} features in its last axis, "
                             f"got shape {tuple(input.shape)}")
        batched = dim == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        if B == 0:
            raise InputError(f"input must have at least one row, got shape {tuple(input.shape)}")
        if hx is None:
            h = x.new_zeros((B, H))
            c = h if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise InputTypeError(f"hx of an LSTMCell must be a pair (h, c) or None, got {type(hx).__name__}")
                h, c = hx
            else:
                if isinstance(hx, (tuple, list)):
                    raise InputTypeError(f"hx of a {type(self).__name__} must be a tensor or None, "
                                         f"not a {type(hx).__name__}")
                h, c = hx, None
            shape = (B, H) if batched else (H,)
            for t, name in ((h, "h"), (c, "c")):
                if t is not None:
                    _check_tensor(t, name if lstm else "hx", w_ih)
                    _check_state(t, name if lstm else "hx", shape)
            if not batched:
                h = h.unsqueeze(0)
                c = None if c is None else c.unsqueeze(0)
            h = h.contiguous()
            c = None if c is None else c.contiguous()
        peep = self._weights(self._peep)[0] if self._peep else None
        hmask = self._sequence_mask(x, B, hx is None) if self.recurrent_dropout and self.training else None
        h_new, c_new = _ops.cell(kind, x.contiguous(), h, c, w_ih, w_hh, b_ih, b_hh, self.backend, views, peep, hmask)
        if not batched:
            h_new, c_new = h_new.squeeze(0), c_new.squeeze(0) if lstm else c_new
        return (h_new, c_new) if lstm else h_new


def _state_ok(t: Any, dtype: torch.dtype, B: int, H: int) -> bool:
    """``t`` is a CPU tensor [B, H] of ``dtype`` (the cells' fast path)."""
    return (type(t) is torch.Tensor and t.dtype is dtype and t.is_cpu and t.dim() == 2 and t.shape[0] == B
            and t.shape[1] == H)


_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class LSTMCell(_Cell, nn.LSTMCell):
    """``torch.nn.LSTMCell`` on fastrnn's kernels (same arguments, plus keyword ``backend=``;
    ``peepholes=True`` adds a parameter ``weight_peep [3 * hidden_size]`` as :class:`LSTM`'s;
    ``input_forget=True``: f = 1 - i, as :class:`LSTM`'s).

    Keyword ``recurrent_dropout=p`` (every cell; which ``torch.nn`` has not): in training mode the
    step's recurrent product sees ``h * mask``, one mask ``[B, hidden_size]`` per sequence (keep with
    probability 1-p, scaled by 1/(1-p), from torch's generator), drawn at the sequence's first step (a
    step given no ``hx``, or the first after ``reset_dropout_mask()``) and shared by the steps that
    follow, as fastrnn's own cells do; eval mode applies none."""

    _kind = "lstm"
    _has_c = True  # its kinds carry a cell state: read on every step

    def __init__(self, *args: Any, backend: str | None = None, peepholes: bool = False, input_forget: bool = False,
                 recurrent_dropout: float = 0.0, **kwargs: Any) -> None:
        kind = _lstm_kind(input_forget)
        nn.LSTMCell.__init__(self, *args, **kwargs)
        self._set_backend(backend)
        self._set_recurrent_dropout(recurrent_dropout)
        self._kind = kind
        self.peepholes = flag(peepholes, "peepholes")
        if self.peepholes:
            self._peep = ("weight_peep",)
            _add_peepholes(self, self._peep, self.hidden_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + _lstm_variants_repr(self)


class GRUCell(_Cell, nn.GRUCell):
    """``torch.nn.GRUCell`` on fastrnn's kernels (same arguments, plus keywords ``backend=`` and
    ``recurrent_dropout=``, see :class:`LSTMCell`)."""

    _kind = "gru"

    def __init__(self, *args: Any, backend: str | None = None, recurrent_dropout: float = 0.0,
                 **kwargs: Any) -> None:
        nn.GRUCell.__init__(self, *args, **kwargs)
        self._set_backend(backend)
        self._set_recurrent_dropout(recurrent_dropout)


class RNNCell(_Cell, nn.RNNCell):
    """``torch.nn.RNNCell`` on fastrnn's kernels (same arguments, plus keywords ``backend=`` and
    ``recurrent_dropout=``, see :class:`LSTMCell`)."""

    def __init__(self, *args: Any, backend: str | None = None, recurrent_dropout: float = 0.0,
                 **kwargs: Any) -> None:
        nn.RNNCell.__init__(self, *args, **kwargs)
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {self.nonlinearity}")
        self._kind = "rnn_" + self.nonlinearity
        self._set_backend(backend)
        self._set_recurrent_dropout(recurrent_dropout)


_OWN_CLASSES = frozenset((LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell))  # see _Backend._weights
