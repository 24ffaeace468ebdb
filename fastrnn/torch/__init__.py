"""fastrnn inside PyTorch models.

``LSTM``, ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell`` and ``RNNCell`` are
``torch.nn.Module``s with ``torch.nn``'s exact constructor arguments,
parameters, ``state_dict`` keys and forward signatures (``PackedSequence``
included) whose math runs in fastrnn's kernels, registered with
``torch.library`` as custom operators (``torch.ops.fastrnn.*``) so that eager
autograd, ``torch.compile(fullgraph=True)`` and ``torch.export`` work.
:func:`convert` swaps them into an existing model::

    model = fastrnn.torch.convert(model)

Importing this package imports torch; ``import fastrnn`` alone never does.
CPU float32 and float64 only.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from ._ops import pending_workspaces
from .modules import GRU, LSTM, RNN, GRUCell, InputError, InputTypeError, LSTMCell, RNNCell, check_supported

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "InputError", "InputTypeError",
           "pending_workspaces"]

# torch.nn class -> fastrnn.torch class (exact types: a subclass of nn.LSTM may have its own forward)
_SWAP: dict[type[nn.Module], type[nn.Module]] = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN, nn.LSTMCell: LSTMCell,
                                                 nn.GRUCell: GRUCell, nn.RNNCell: RNNCell}


def _why_not(module: nn.Module) -> str | None:
    """None if fastrnn can serve ``module``, else the reason."""
    for name, p in module.named_parameters():
        try:
            check_supported(p.dtype, p.device, name)
        except (InputError, InputTypeError):
            return f"{name} is {p.dtype} on {p.device}"
    return None


def _replacement(module: Any, backend: str | None) -> nn.Module:
    """A fastrnn.torch module of ``module``'s configuration holding ``module``'s own parameters."""
    cls = _SWAP[type(module)]
    p = next(module.parameters())
    factory = dict(device=p.device, dtype=p.dtype, backend=backend)
    if isinstance(module, nn.RNNBase):
        kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                  dropout=module.dropout, bidirectional=module.bidirectional, **factory)
        if cls is RNN:
            kw["nonlinearity"] = module.nonlinearity
        if module.proj_size:
            kw["proj_size"] = module.proj_size
        new = cls(module.input_size, module.hidden_size, **kw)
    else:
        kw = dict(bias=module.bias, **factory)
        if cls is RNNCell:
            kw["nonlinearity"] = module.nonlinearity
        new = cls(module.input_size, module.hidden_size, **kw)
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)  # the same Parameter objects: optimizers and tied weights stay valid
    new.train(module.training)
    return new


def convert(model: nn.Module, inplace: bool = False, *, backend: str | None = None) -> nn.Module:
    """``model`` with every ``nn.LSTM``/``nn.GRU``/``nn.RNN`` and cell replaced by fastrnn's.

    The replacements hold the original modules' parameters (the same ``Parameter`` objects, so an
    optimizer built on the model before the call still updates them). Modules fastrnn cannot serve
    (parameters on another device than the CPU, a dtype other than float32/float64) are left as they
    are, with one warning naming them. ``inplace=False`` converts a deep copy;
    ``model`` itself may be one of the recurrent modules. ``backend``: fastrnn backend of the new
    modules (None: fastrnn's own choice).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    done: dict[int, nn.Module] = {}
    skipped: list[str] = []

    def swap(module: nn.Module, name: str) -> nn.Module:
        key = id(module)
        if key not in done:
            reason = _why_not(module)
            if reason is None:
                done[key] = _replacement(module, backend)
            else:
                done[key] = module
                skipped.append(f"{name or '<model>'} ({type(module).__name__}: {reason})")
        return done[key]

    if type(model) in _SWAP:
        model = swap(model, "")
    else:
        for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
            for child_name, child in list(parent.named_children()):
                if type(child) in _SWAP:
                    full = f"{parent_name}.{child_name}" if parent_name else child_name
                    setattr(parent, child_name, swap(child, full))
    if skipped:
        warnings.warn("fastrnn.torch.convert left these modules unchanged (fastrnn runs CPU float32/float64): "
                      + "; ".join(skipped), UserWarning, stacklevel=2)
    return model

