"""fastrnn's kernels as PyTorch custom operators (``torch.library``).

Four operators, one per entry of the backend contract (``backends/CONTRACT.md``):

- ``fastrnn::layer_forward``  one layer, one direction, the whole sequence;
- ``fastrnn::layer_backward`` its gradients;
- ``fastrnn::cell_forward``   one step;
- ``fastrnn::cell_backward``  its gradients.

Each forward has ``register_autograd`` (its backward is the matching backward
operator) and ``register_fake`` (shapes only), so eager autograd,
``torch.compile(fullgraph=True)`` and ``torch.export`` all see one opaque
operator. Tensors reach the kernels as NumPy views of their memory and the
kernels' arrays come back through ``torch.from_numpy``: no copies.

The backward workspace. A training forward of the kernels returns an opaque
``ws`` (post-activation gates, cell states) that only the backend's backward
reads; an operator can only return tensors. The forward therefore also
returns a *handle*: a one-element int64 tensor whose memory is owned by a
small NumPy array that holds ``ws`` (``torch.from_numpy`` keeps that array
alive exactly as long as the tensor's storage). Autograd saves the handle for
backward (eagerly, and in the graphs ``torch.compile`` builds), and the
backward operator takes ``ws`` from it, once (once it succeeded: a backward that
failed leaves ``ws`` for a retry). When the handle carries no
workspace - the forward kept nothing (``keep=False``), the workspace was
already consumed (backward called again with ``retain_graph=True``), or a
tracer copied the handle - the backward operator runs the forward again with
``keep=True`` from its saved inputs and differentiates that: the same result
at the cost of one more forward. The operators are thus pure functions of
their tensor arguments, as ``torch.library.opcheck`` requires. When the graph
is freed without a backward, the handle's storage goes and takes ``ws`` with it.

Eagerly (not compiling), :func:`layer` and :func:`cell` skip the dispatcher:
the same kernels run under a plain ``torch.autograd.Function`` that keeps
``ws`` on its context, or with ``keep=False`` and no autograd at all when
nothing needs a gradient (``torch.no_grad()``, ``inference_mode()``, or no
input requiring one). A custom operator's autograd goes through the
dispatcher twice per call and measures several times the per-call cost of an
``autograd.Function`` (a lower-level ``torch.library.Library`` registration
costs the same as ``custom_op``); under ``torch.compile`` and ``torch.export``
the operators are what the graph records.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, overload

import numpy as np
import torch
from numpy.typing import NDArray

from .. import backends as _backends
from ..backends.contract import CELL_GRAD_KEYS, LAYER_GRAD_KEYS

_LIB = "fastrnn"

# ---------------------------------------------------------------------------
# Workspace handles
# ---------------------------------------------------------------------------


class _Holder(np.ndarray):
    """The one-element int64 array (value 0) behind a handle tensor; ``ws`` rides on it."""

    ws: Any = None


# handle's data address -> its holder (an address is unique among live arrays; a copy of a
# handle has another address and finds nothing, so its backward recomputes)
_holders: weakref.WeakValueDictionary[int, _Holder] = weakref.WeakValueDictionary()


def _handle(ws: Any) -> torch.Tensor:
    """A handle tensor for ``ws`` (a plain zero when ``ws`` is None). Every handle holds the value 0,
    so the operators' outputs are deterministic; the workspace is found by the handle's address."""
    if ws is None:
        return torch.zeros(1, dtype=torch.int64)
    holder = np.zeros(1, dtype=np.int64).view(_Holder)
    holder.ws = ws
    handle = torch.from_numpy(holder)
    _holders[handle.data_ptr()] = holder
    return handle


def _ws_of(handle: torch.Tensor) -> Any:
    """The workspace behind ``handle``; None if there is none."""
    holder = _holders.get(handle.data_ptr())
    return None if holder is None else holder.ws


def _consume(handle: torch.Tensor) -> None:
    """Remove the workspace behind ``handle`` once a backward used it: the backend consumed it. A
    backward that failed leaves it, and a retry differentiates it (contract.Backend)."""
    holder = _holders.get(handle.data_ptr())
    if holder is not None:
        holder.ws = None


def pending_workspaces() -> int:
    """Number of forward workspaces alive and not yet consumed by a backward (for tests)."""
    return sum(1 for h in list(_holders.values()) if h.ws is not None)


# ---------------------------------------------------------------------------
# Conversions (no copies for contiguous CPU tensors)
# ---------------------------------------------------------------------------


@overload
def _np(t: torch.Tensor) -> NDArray[Any]: ...
@overload
def _np(t: torch.Tensor | None) -> NDArray[Any] | None: ...


def _np(t: torch.Tensor | None) -> NDArray[Any] | None:
    """A NumPy view of a tensor; a C-contiguous NumPy copy if the tensor is not C-contiguous (e.g.
    the expanded gradient of ``out.sum()``). The copy is NumPy's, not ``Tensor.contiguous()``: a
    large torch copy runs on PyTorch's OpenMP threads, which then busy-wait on the cores while
    the kernel that follows runs (see bench/torch_threads.py)."""
    if t is None:
        return None
    a = t.detach().numpy() if t.requires_grad else t.numpy()
    return a if t.is_contiguous() else np.ascontiguousarray(a)


def _t(a: NDArray[Any] | None, like: torch.Tensor) -> torch.Tensor:
    """A tensor sharing memory with array ``a``; an empty tensor of ``like``'s dtype for None."""
    if a is None:
        return like.new_empty(0)
    return torch.from_numpy(a)


def _sync_threads() -> None:
    """fastrnn's kernels use as many threads as PyTorch's intra-op pool (``torch.set_num_threads``)."""
    n = torch.get_num_threads()
    if n != _backends.get_num_threads():
        _backends.set_num_threads(n)


def _backend(name: str | None) -> ModuleType:
    return _backends.get_backend(name or None)


# ---------------------------------------------------------------------------
# The kernels on tensors: a forward returns its workspace, a backward takes it
# (None: recompute the forward with keep=True first)
# ---------------------------------------------------------------------------


def _run_layer(kind: str, x: _T, h0: _T, c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
               lengths: _T | None, reverse: bool, keep: bool, backend: str,
               peep: _T | None, hmask: _T | None, w_hr: _T | None) -> tuple[_T, _T, _T, Any]:
    _sync_threads()
    out, h_n, c_n, ws = _backend(backend).layer_forward(
        kind, _np(x), _np(h0), _np(c0), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), _np(lengths), reverse, keep,
        peep=_np(peep), hmask=_np(hmask), w_hr=_np(w_hr))
    return torch.from_numpy(out), torch.from_numpy(h_n), _t(c_n, x), ws


def _grad_layer(ws: Any, grad_out: _T, grad_h_n: _T, grad_c_n: _T | None, kind: str, x: _T, h0: _T, c0: _T | None,
                w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None, lengths: _T | None, reverse: bool,
                backend: str, peep: _T | None, hmask: _T | None,
                w_hr: _T | None) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T, _T]:
    _sync_threads()
    be = _backend(backend)
    if ws is None:
        ws = be.layer_forward(kind, _np(x), _np(h0), _np(c0), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh),
                              _np(lengths), reverse, True, peep=_np(peep), hmask=_np(hmask), w_hr=_np(w_hr))[3]
    g = be.layer_backward(ws, _np(grad_out), _np(grad_h_n), _np(grad_c_n))
    return (torch.from_numpy(g["x"]), torch.from_numpy(g["h0"]), _t(g["c0"], x), torch.from_numpy(g["w_ih"]),
            torch.from_numpy(g["w_hh"]), _t(g["b_ih"], x), _t(g["b_hh"], x), _t(g["peep"], x), _t(g["w_hr"], x))


def _run_cell(kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
              keep: bool, backend: str, peep: _T | None, hmask: _T | None) -> tuple[_T, _T, Any]:
    _sync_threads()
    h_new, c_new, ws = _backend(backend).cell_forward(
        kind, _np(x), _np(h), _np(c), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), keep, _np(peep), _np(hmask))
    return torch.from_numpy(h_new), _t(c_new, x), ws


def _grad_cell(ws: Any, grad_h: _T, grad_c: _T | None, kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T,
               b_ih: _T | None, b_hh: _T | None, backend: str,
               peep: _T | None, hmask: _T | None) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T]:
    _sync_threads()
    be = _backend(backend)
    if ws is None:
        ws = be.cell_forward(kind, _np(x), _np(h), _np(c), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), True,
                             _np(peep), _np(hmask))[2]
    g = be.cell_backward(ws, _np(grad_h), _np(grad_c))
    return (torch.from_numpy(g["x"]), torch.from_numpy(g["h"]), _t(g["c"], x), torch.from_numpy(g["w_ih"]),
            torch.from_numpy(g["w_hh"]), _t(g["b_ih"], x), _t(g["b_hh"], x), _t(g["peep"], x))


def _zeros_for(g: _T | None, like: _T) -> _T:
    """An output's gradient as the kernels take it: zeros when autograd has none."""
    return torch.zeros_like(like, memory_format=torch.contiguous_format) if g is None else g.contiguous()


# ---------------------------------------------------------------------------
# The custom operators (what torch.compile and torch.export see)
# ---------------------------------------------------------------------------

_T = torch.Tensor


@torch.library.custom_op(f"{_LIB}::layer_forward", mutates_args=(), device_types="cpu")
def layer_forward(kind: str, x: _T, h0: _T, c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
                  lengths: _T | None, reverse: bool, keep: bool, backend: str,
                  peep: _T | None = None, hmask: _T | None = None, w_hr: _T | None = None) -> tuple[_T, _T, _T, _T]:
    """``out [T,B,P], h_n [B,P], c_n [B,H] (LSTM; else empty), handle`` (CONTRACT.md's layer_forward;
    P = H without a projection ``w_hr``)."""
    out, h_n, c_n, ws = _run_layer(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep, backend, peep,
                                   hmask, w_hr)
    return out, h_n, c_n, _handle(ws)


@layer_forward.register_fake
def _(kind: str, x: _T, h0: _T, c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
      lengths: _T | None, reverse: bool, keep: bool, backend: str, peep: _T | None = None,
      hmask: _T | None = None, w_hr: _T | None = None) -> tuple[_T, _T, _T, _T]:
    T, B, P = x.shape[0], x.shape[1], w_hh.shape[1]
    c_n = _like(c0, x)
    return x.new_empty((T, B, P)), x.new_empty((B, P)), c_n, x.new_empty((1,), dtype=torch.int64)


@torch.library.custom_op(f"{_LIB}::layer_backward", mutates_args=(), device_types="cpu")
def layer_backward(handle: _T, grad_out: _T, grad_h_n: _T, grad_c_n: _T | None, kind: str, x: _T, h0: _T,
                   c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None, lengths: _T | None,
                   reverse: bool, backend: str, peep: _T | None = None,
                   hmask: _T | None = None, w_hr: _T | None = None) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T, _T]:
    """Gradients ``x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr`` (empty where the forward had None)."""
    grads = _grad_layer(_ws_of(handle), grad_out, grad_h_n, grad_c_n, kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                        lengths, reverse, backend, peep, hmask, w_hr)
    _consume(handle)
    return grads


def _like(t: _T | None, x: _T) -> _T:
    return x.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)


@layer_backward.register_fake
def _(handle: _T, grad_out: _T, grad_h_n: _T, grad_c_n: _T | None, kind: str, x: _T, h0: _T, c0: _T | None,
      w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None, lengths: _T | None, reverse: bool,
      backend: str, peep: _T | None = None, hmask: _T | None = None, w_hr: _T | None = None) -> tuple[_T, ...]:
    return tuple(_like(t, x) for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr))


def _layer_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[_T, ...]) -> None:
    kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep, backend, peep, hmask, w_hr = inputs
    ctx.args = (kind, reverse, backend, c0 is not None, b_ih is not None, peep is not None, w_hr is not None)
    ctx.save_for_backward(output[3], x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep, hmask, w_hr)


def _layer_autograd(ctx: Any, grad_out: _T | None, grad_h_n: _T | None, grad_c_n: _T | None,
                    _grad_handle: _T | None) -> tuple[_T | None, ...]:
    kind, reverse, backend, lstm, bias, peeps, proj = ctx.args
    handle, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep, hmask, w_hr = ctx.saved_tensors
    out_like = x.new_empty((x.shape[0], x.shape[1], w_hh.shape[1]))
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dpeep, dw_hr = layer_backward(
        handle, _zeros_for(grad_out, out_like), _zeros_for(grad_h_n, h0), _zeros_for(grad_c_n, c0) if lstm else None,
        kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend, peep, hmask, w_hr)
    return (None, dx, dh0, dc0 if lstm else None, dw_ih, dw_hh, db_ih if bias else None, db_hh if bias else None,
            None, None, None, None, dpeep if peeps else None, None, dw_hr if proj else None)


layer_forward.register_autograd(_layer_autograd, setup_context=_layer_setup)


@torch.library.custom_op(f"{_LIB}::cell_forward", mutates_args=(), device_types="cpu")
def cell_forward(kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
                 keep: bool, backend: str, peep: _T | None = None, hmask: _T | None = None) -> tuple[_T, _T, _T]:
    """``h_new [B,H], c_new [B,H] (LSTM; else empty), handle`` (CONTRACT.md's cell_forward)."""
    h_new, c_new, ws = _run_cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep, backend, peep, hmask)
    return h_new, c_new, _handle(ws)


@cell_forward.register_fake
def _(kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None, keep: bool,
      backend: str, peep: _T | None = None, hmask: _T | None = None) -> tuple[_T, _T, _T]:
    B, H = x.shape[0], w_hh.shape[1]
    c_new = x.new_empty((B, H)) if c is not None else x.new_empty(0)
    return x.new_empty((B, H)), c_new, x.new_empty((1,), dtype=torch.int64)


@torch.library.custom_op(f"{_LIB}::cell_backward", mutates_args=(), device_types="cpu")
def cell_backward(handle: _T, grad_h: _T, grad_c: _T | None, kind: str, x: _T, h: _T, c: _T | None, w_ih: _T,
                  w_hh: _T, b_ih: _T | None, b_hh: _T | None, backend: str,
                  peep: _T | None = None, hmask: _T | None = None) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T]:
    """Gradients ``x, h, c, w_ih, w_hh, b_ih, b_hh, peep`` (empty where the forward had None)."""
    grads = _grad_cell(_ws_of(handle), grad_h, grad_c, kind, x, h, c, w_ih, w_hh, b_ih, b_hh, backend, peep,
                       hmask)
    _consume(handle)
    return grads


@cell_backward.register_fake
def _(handle: _T, grad_h: _T, grad_c: _T | None, kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T,
      b_ih: _T | None, b_hh: _T | None, backend: str, peep: _T | None = None,
      hmask: _T | None = None) -> tuple[_T, ...]:
    return tuple(_like(t, x) for t in (x, h, c, w_ih, w_hh, b_ih, b_hh, peep))


def _cell_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[_T, ...]) -> None:
    kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep, backend, peep, hmask = inputs
    ctx.args = (kind, backend, c is not None, b_ih is not None, peep is not None)
    ctx.save_for_backward(output[2], x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask)


def _cell_autograd(ctx: Any, grad_h: _T | None, grad_c: _T | None, _grad_handle: _T | None) -> tuple[_T | None, ...]:
    kind, backend, lstm, bias, peeps = ctx.args
    handle, x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask = ctx.saved_tensors
    dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dpeep = cell_backward(
        handle, _zeros_for(grad_h, h), _zeros_for(grad_c, h) if lstm else None, kind, x, h, c, w_ih, w_hh, b_ih,
        b_hh, backend, peep, hmask)
    return (None, dx, dh, dc if lstm else None, dw_ih, dw_hh, db_ih if bias else None, db_hh if bias else None,
            None, None, dpeep if peeps else None, None)


cell_forward.register_autograd(_cell_autograd, setup_context=_cell_setup)

_DOUBLE = ("fastrnn.torch: double backward (the gradient of a gradient, e.g. autograd.grad(..., create_graph=True) "
           "then backward through it) is not supported by fastrnn's kernels")


def _no_double_backward(ctx: Any, *grads: Any) -> Any:
    raise RuntimeError(_DOUBLE)


def _nothing_to_save(ctx: Any, inputs: Any, output: Any) -> None:
    pass


layer_backward.register_autograd(_no_double_backward, setup_context=_nothing_to_save)
cell_backward.register_autograd(_no_double_backward, setup_context=_nothing_to_save)


# ---------------------------------------------------------------------------
# The eager path: the same kernels under a plain autograd.Function, the
# workspace on its context (no dispatcher round trips: cheaper per call)
# ---------------------------------------------------------------------------

# Function.apply is a Python wrapper around the C++ ``_FunctionBase.apply``: when no functorch
# transform (vmap, grad, ...) is active it only unwraps dead functorch wrappers and calls it, at
# several microseconds per call. :func:`_apply` does the same for the two Functions below.
_functorch_active = torch._C._are_functorch_transforms_active
_unwrap_if_dead = torch._C._functorch.unwrap_if_dead
_base_apply = torch._C._FunctionBase.__dict__["apply"]


class _LayerFn(torch.autograd.Function):
    """One layer and direction; non-tensor arguments first: the backend module, the kind, the
    NumPy views of the weights (see :class:`WeightViews`), lengths, reverse; then the tensors in
    the order of the contract's gradients (``LAYER_GRAD_KEYS``), and last ``hmask`` (no gradient)."""

    @staticmethod
    def forward(ctx: Any, be: ModuleType, kind: str, views: Sequence[NDArray[Any] | None], lengths: _T | None,
                reverse: bool, x: _T, h0: _T, c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None,
                b_hh: _T | None, peep: _T | None, w_hr: _T | None, hmask: _T | None) -> tuple[_T, _T, _T]:
        ctx.set_materialize_grads(False)  # a missing output gradient reaches the kernels as None (zero)
        out, h_n, c_n, ws = be.layer_forward(kind, _np(x), _np(h0), _np(c0), *views, _np(lengths), reverse, True,
                                             peep=_np(peep), hmask=_np(hmask), w_hr=_np(w_hr))
        ctx.ws = ws
        ctx.be, ctx.kind, ctx.lengths, ctx.reverse = be, kind, lengths, reverse
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr, hmask)
        return torch.from_numpy(out), torch.from_numpy(h_n), _t(c_n, x)

    @staticmethod
    def backward(ctx: Any, grad_out: _T | None, grad_h_n: _T | None, grad_c_n: _T | None) -> tuple[_T | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE)
        # saved_tensors is read even when the workspace is there: autograd raises if one of them
        # was changed in place since the forward (the workspace refers to their memory)
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr, hmask = ctx.saved_tensors
        be, ws = ctx.be, ctx.ws
        if ws is None:
            ws = be.layer_forward(ctx.kind, _np(x), _np(h0), _np(c0), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh),
                                  _np(ctx.lengths), ctx.reverse, True, peep=_np(peep), hmask=_np(hmask),
                                  w_hr=_np(w_hr))[3]
        g = be.layer_backward(ws, _np_grad(grad_out), _np_grad(grad_h_n), _np_grad(grad_c_n))
        # consumed after success (a failed backward leaves it for a retry); a second backward
        # (retain_graph=True) recomputes
        ctx.ws = None
        return (None, None, None, None, None) + _grads(ctx.needs_input_grad[:-1], g, LAYER_GRAD_KEYS) + (None,)


class _CellFn(torch.autograd.Function):
    """One step; non-tensor arguments first: the backend module, the kind, the weights' NumPy views;
    then the tensors in the order of the contract's gradients (``CELL_GRAD_KEYS``), and last
    ``hmask`` (no gradient)."""

    @staticmethod
    def forward(ctx: Any, be: ModuleType, kind: str, views: Sequence[NDArray[Any] | None], x: _T, h: _T,
                c: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
                peep: _T | None, hmask: _T | None) -> tuple[_T, _T]:
        ctx.set_materialize_grads(False)
        h_new, c_new, ws = be.cell_forward(kind, _np(x), _np(h), _np(c), *views, True, _np(peep), _np(hmask))
        ctx.ws = ws
        ctx.be, ctx.kind = be, kind
        ctx.save_for_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask)
        return torch.from_numpy(h_new), _t(c_new, x)

    @staticmethod
    def backward(ctx: Any, grad_h: _T | None, grad_c: _T | None) -> tuple[_T | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE)
        x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask = ctx.saved_tensors  # read for autograd's in-place check
        be, ws = ctx.be, ctx.ws
        if ws is None:
            ws = be.cell_forward(ctx.kind, _np(x), _np(h), _np(c), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh),
                                 True, _np(peep), _np(hmask))[2]
        g = be.cell_backward(ws, _np_grad(grad_h), _np_grad(grad_c))
        ctx.ws = None  # consumed after success, as in _LayerFn
        return (None, None, None) + _grads(ctx.needs_input_grad[:-1], g, CELL_GRAD_KEYS) + (None,)


_apply_layer = _base_apply.__get__(None, _LayerFn)
_apply_cell = _base_apply.__get__(None, _CellFn)
_LAYER_TENSORS = 5  # _LayerFn.forward's arguments before the tensors
_CELL_TENSORS = 3


def _np_grad(g: _T | None) -> NDArray[Any] | None:
    """An output's gradient as the kernels take it: None (zero) when autograd has none."""
    return None if g is None else _np(g)


def _grads(needs: Sequence[bool], g: dict[str, Any], keys: Sequence[str]) -> tuple[_T | None, ...]:
    """The kernels' gradient dict as the Functions' gradients of its ``keys`` (the contract's, in
    the order of the Functions' last tensor arguments; ``needs``: ctx.needs_input_grad; None where
    no gradient is needed or the input was None)."""
    n = len(needs) - len(keys)
    out: list[_T | None] = []
    for i, key in enumerate(keys):
        a = g[key] if needs[n + i] else None
        out.append(None if a is None else torch.from_numpy(a))
    return tuple(out)


def _apply(fn: type[torch.autograd.Function], apply: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``fn.apply(*args)``, through the C++ apply directly when no functorch transform is active."""
    if _functorch_active():
        return fn.apply(*args)  # type: ignore[no-untyped-call]  # torch's Function.apply is untyped
    return apply(*[_unwrap_if_dead(a) if isinstance(a, torch.Tensor) else a for a in args])


class WeightViews:
    """NumPy views of a module's weights, made once and reused while each weight is the same
    tensor over the same memory (address, shape, dtype, contiguous): optimizers update weights
    in place, which the views see. A new Parameter or a replaced ``.data`` makes them afresh.
    A copy or pickle of the module starts with an empty cache."""

    __slots__ = ("tensors", "keys", "views")

    def __init__(self) -> None:
        self.tensors: tuple[_T | None, ...] = ()
        self.keys: tuple[tuple[int, torch.Size, torch.dtype] | None, ...] = ()
        self.views: tuple[NDArray[Any] | None, ...] = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> WeightViews:
        return WeightViews()

    def __reduce__(self) -> tuple[type[WeightViews], tuple[()]]:
        return WeightViews, ()

    def get(self, weights: tuple[_T | None, ...]) -> tuple[NDArray[Any] | None, ...]:
        """The views of ``weights`` (a tuple of tensors or None)."""
        if len(weights) == len(self.tensors):
            for t, old, key in zip(weights, self.tensors, self.keys):
                if t is not old or (t is not None and (key is None or t.data_ptr() != key[0] or t.shape != key[1]
                                                       or t.dtype is not key[2] or not t.is_contiguous())):
                    break
            else:
                return self.views
        self.views = tuple(_np(t) for t in weights)
        self.keys = tuple(None if t is None or not t.is_contiguous() else (t.data_ptr(), t.shape, t.dtype)
                          for t in weights)
        self.tensors = weights
        return self.views


# ---------------------------------------------------------------------------
# Entry points of the modules
# ---------------------------------------------------------------------------


def _needs_grad(tensors: Sequence[_T | None]) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


# torch.export records keep=False (an exported program is an inference graph; should
# it be differentiated after all, the backward operator recomputes the forward); torch.compile
# records whether the traced call needs a gradient.


def layer(kind: str, x: _T, h0: _T, c0: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None,
          lengths: _T | None, reverse: bool, backend: str,
          views: Sequence[NDArray[Any] | None] | None = None, peep: _T | None = None,
          hmask: _T | None = None, w_hr: _T | None = None) -> tuple[_T, _T, _T]:
    """One layer, one direction: ``(out, h_n, c_n)`` (``c_n`` empty unless LSTM), differentiable.

    Eagerly through :class:`_LayerFn` (training) or the kernel itself (nothing needs a gradient:
    ``keep=False``); under ``torch.compile``/``torch.export`` through the custom operator.
    ``views``: the NumPy views of ``w_ih, w_hh, b_ih, b_hh`` if the caller has them
    (:class:`WeightViews`); ``peep``: the LSTM's peephole weights or None; ``hmask``: the
    recurrent input's mask ``[B, P]`` (recurrent dropout; no gradient) or None; ``w_hr``: the
    LSTM's projection ``[P, H]`` or None (P = H).
    """
    keep = _needs_grad((x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, w_hr))
    if torch.compiler.is_compiling():
        keep = keep and not torch.compiler.is_exporting()  # see the note above layer()
        traced: tuple[_T, _T, _T] = layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep,
                                                  backend, peep, hmask, w_hr)[:3]
        return traced
    _sync_threads()
    be = _backend(backend)
    if views is None:
        views = (_np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh))
    if keep:
        outs: tuple[_T, _T, _T] = _apply(_LayerFn, _apply_layer,
                                         (be, kind, views, lengths, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep,
                                          w_hr, hmask))
        return outs
    out, h_n, c_n, _ = be.layer_forward(kind, _np(x), _np(h0), _np(c0), *views, _np(lengths), reverse, False,
                                        peep=_np(peep), hmask=_np(hmask), w_hr=_np(w_hr))
    return torch.from_numpy(out), torch.from_numpy(h_n), _t(c_n, x)


def cell(kind: str, x: _T, h: _T, c: _T | None, w_ih: _T, w_hh: _T, b_ih: _T | None, b_hh: _T | None, backend: str,
         views: Sequence[NDArray[Any] | None] | None = None, peep: _T | None = None,
         hmask: _T | None = None) -> tuple[_T, _T]:
    """One step: ``(h_new, c_new)`` (``c_new`` empty unless LSTM), differentiable (as :func:`layer`);
    ``hmask [B, H]``: the step's recurrent product sees ``h * hmask`` (recurrent dropout)."""
    if torch.is_grad_enabled() and (x.requires_grad or h.requires_grad or w_ih.requires_grad or
                                    w_hh.requires_grad or (c is not None and c.requires_grad) or
                                    (b_ih is not None and (b_ih.requires_grad or  # b_hh is given with b_ih
                                                           b_hh.requires_grad)) or  # type: ignore[union-attr]
                                    (peep is not None and peep.requires_grad)):
        keep = True
    else:
        keep = False
    if torch.compiler.is_compiling():
        keep = keep and not torch.compiler.is_exporting()  # see the note above layer()
        traced: tuple[_T, _T] = cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep, backend, peep,
                                             hmask)[:2]
        return traced
    _sync_threads()
    be = _backend(backend)
    if views is None:
        views = (_np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh))
    if keep:
        outs: tuple[_T, _T] = _apply(_CellFn, _apply_cell,
                                     (be, kind, views, x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask))
        return outs
    h_new, c_new, _ = be.cell_forward(kind, _np(x), _np(h), _np(c), *views, False, _np(peep), _np(hmask))
    return torch.from_numpy(h_new), _t(c_new, x)
