"""The ``acc`` argument of ``layer_backward`` (``contract.Backend``) for the Python backends.

The cpp binding checks the same in C++ (``csrc/python/bind_layers.cpp``) and lets its kernel
accumulate in place; these backends compute fresh weight gradients and add.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def check_acc(acc: Any, w_ih: np.ndarray, w_hh: np.ndarray, others: Iterable[Any]) -> None:
    """Raise unless ``acc`` is None or a pair of writeable C-contiguous arrays shaped and typed
    like ``w_ih``, ``w_hh`` that share no memory with each other or with ``others``."""
    if acc is None:
        return
    if not isinstance(acc, (tuple, list)) or len(acc) != 2:
        raise TypeError("acc must be None or a pair (w_ih, w_hh) of arrays to add the weight gradients into, "
                        f"got {type(acc).__name__}")
    for i, (a, w, name) in enumerate(zip(acc, (w_ih, w_hh), ("acc[0] (w_ih)", "acc[1] (w_hh)"))):
        if not isinstance(a, np.ndarray) or a.dtype != w.dtype or not a.flags.c_contiguous:
            raise TypeError(f"{name} must be a C-contiguous numpy array of dtype {w.dtype} like the forward pass")
        if a.shape != w.shape:
            raise ValueError(f"{name} must have shape {w.shape}, got {a.shape}")
        if not a.flags.writeable:
            raise ValueError(f"{name} must be writeable")
        for o in list(others) + [w_ih, w_hh] + list(acc[:i]):
            if o is not None and np.may_share_memory(a, o):
                raise ValueError(f"{name} shares memory with another argument")


def add_into(grads: dict[str, Any], acc: Any) -> dict[str, Any]:
    """``grads`` with its weight gradients added into ``acc`` (checked) and replaced by it."""
    if acc is not None:
        a_ih, a_hh = acc
        a_ih += grads["w_ih"]
        a_hh += grads["w_hh"]
        grads["w_ih"], grads["w_hh"] = a_ih, a_hh
    return grads
