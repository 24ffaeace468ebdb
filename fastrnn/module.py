"""``Module``: parameters as NumPy arrays under PyTorch's names, with gradients."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._validate import to_numpy

_M = TypeVar("_M", bound="Module")


class GradientError(ValueError, RuntimeError):
    """``backward`` cannot run: no forward to differentiate, it kept nothing (``no_grad``), or
    something it depends on changed since (a parameter replaced, the step's outputs dropped)."""


class Module:
    """Base of fastrnn's layers: named parameters, their gradients, train/eval.

    Parameters live in ``self._params`` (name -> array, in PyTorch's order);
    ``self.grads`` holds an array of the same shape per name, accumulated by
    ``backward`` and cleared by :meth:`zero_grad`.

    Thread safety: what a forward records for backward lives per thread
    (``self._local``), and gradients accumulate under a lock, so one layer may
    run forwards and backwards in several threads at once; each thread's
    ``backward`` differentiates that thread's own most recent forward.

    Versions: replacing parameters (:meth:`load_state_dict`, assigning
    ``layer.weight = ...``) bumps ``self._version``; a forward records the
    version it ran with and its backward raises :class:`GradientError` naming
    the parameters replaced since (a gradient of weights that are no longer
    there would be silently wrong). In-place NumPy writes into a parameter
    array (``layer.weight[...] = 0``, an optimizer's step) do not count: do
    them between a backward and the next forward.
    """

    #: the layer's computation; ``layer(...)`` calls it (each subclass defines it)
    forward: Callable[..., Any]

    def __init__(self) -> None:
        self._params: OrderedDict[str, NDArray[Any]] = OrderedDict()
        self.grads: OrderedDict[str, NDArray[Any]] = OrderedDict()
        self.training = True
        self._local = threading.local()
        self._grad_lock = threading.Lock()
        self._version = 0
        self._changed: dict[str, int] = {}  # parameter name -> the version that replaced it last

    def _bump(self, names: Iterable[str]) -> None:
        """Record that parameters ``names`` were replaced (see Versions above)."""
        self._version += 1
        for name in names:
            self._changed[name] = self._version

    def _check_version(self, version: int, what: str = "backward") -> None:
        """Raise GradientError if parameters were replaced since ``version`` (a forward's)."""
        if self._version != version:
            names = sorted(n for n, v in self._changed.items() if v > version)
            raise GradientError(
                f"{type(self).__name__}.{what}: parameter(s) {', '.join(names)} were replaced (load_state_dict or "
                "assignment) after the forward this backward differentiates, so its gradient would not be the "
                "gradient of that forward; run the forward again")

    # copy/pickle: the per-thread records and the lock are not state
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_grad_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_version", 0)
        state.setdefault("_changed", {})
        self.__dict__.update(state)
        self.__dict__["_local"] = threading.local()
        self.__dict__["_grad_lock"] = threading.Lock()

    def _accumulate(self, pairs: Iterable[tuple[str, NDArray[Any]]]) -> None:
        """Add (name, gradient) pairs into ``self.grads`` (under the lock)."""
        with self._grad_lock:
            for name, g in pairs:
                self.grads[name] += g

    # parameters --------------------------------------------------------
    def _register(self, name: str, array: NDArray[Any]) -> None:
        self._params[name] = array
        self.grads[name] = np.zeros_like(array)

    def __getattr__(self, name: str) -> NDArray[Any]:
        params: dict[str, NDArray[Any]] | None = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self._assign(name, value)
        else:
            object.__setattr__(self, name, value)

    def _assign(self, name: str, value: Any) -> None:
        """Copy ``value`` into parameter ``name`` in place (shape checked, cast to the layer's dtype)."""
        target = self._params[name]
        arr = to_numpy(value, f"parameter {name!r}")
        if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
            raise TypeError(f"parameter {name!r} must be a real numeric array, got dtype {arr.dtype}")
        if arr.shape != target.shape:
            raise ValueError(f"parameter {name!r} must have shape {target.shape}, got {tuple(arr.shape)}")
        np.copyto(target, arr, casting="unsafe")
        self._bump([name])

    def named_parameters(self) -> Iterator[tuple[str, NDArray[Any]]]:
        """(name, array) pairs in PyTorch's order."""
        return iter(self._params.items())

    def parameters(self) -> list[NDArray[Any]]:
        return list(self._params.values())

    def state_dict(self) -> OrderedDict[str, NDArray[Any]]:
        """A copy of every parameter under its PyTorch name."""
        return OrderedDict((k, v.copy()) for k, v in self._params.items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
        """Load parameters from NumPy arrays or torch tensors (torch is not imported).

        Missing or unexpected keys (with ``strict``) and wrong shapes raise
        ValueError, entries NumPy cannot hold (e.g. bfloat16 or meta tensors)
        and non-numeric dtypes TypeError, each naming the key; nothing is
        changed unless every entry is valid.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        keys = set(state_dict.keys())
        missing = [k for k in self._params if k not in keys]
        unexpected = sorted(k for k in keys if k not in self._params)
        if strict and (missing or unexpected):
            raise ValueError(
                f"error loading state_dict into {type(self).__name__}: missing keys {missing}, unexpected keys {unexpected}"
            )
        staged: dict[str, NDArray[Any]] = {}
        for name, target in self._params.items():
            if name not in keys:
                continue
            arr = to_numpy(state_dict[name], f"state_dict[{name!r}]")
            if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
                raise TypeError(f"state_dict[{name!r}] must be a real numeric array, got dtype {arr.dtype}")
            if arr.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {target.shape}, got {tuple(arr.shape)}")
            staged[name] = arr
        for name, arr in staged.items():
            np.copyto(self._params[name], arr, casting="unsafe")
        self._bump(staged)
        return missing, unexpected

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    # modes -------------------------------------------------------------
    def train(self: _M, mode: bool = True) -> _M:
        self.training = bool(mode)
        return self

    def eval(self: _M) -> _M:
        return self.train(False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)
