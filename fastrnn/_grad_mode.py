"""``no_grad``: forwards that keep nothing for backward (the inference path)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


class _State(threading.local):
    """The grad mode of each thread; the class attribute is the default of a thread that never set it
    (read without the AttributeError that ``getattr(local, name, default)`` raises and catches inside:
    a quarter of a microsecond on every call)."""

    enabled: bool = True


_state = _State()


def is_grad_enabled() -> bool:
    """True unless inside ``with fastrnn.no_grad():`` on this thread."""
    return _state.enabled


class no_grad:  # noqa: N801 - named as in PyTorch
    """Context manager (and decorator) under which forwards keep no state for backward."""

    __slots__ = ("_prev",)  # entered once per call of a cell in a loop: keep it cheap

    _prev: bool

    def __enter__(self) -> no_grad:
        self._prev = is_grad_enabled()
        _state.enabled = False
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        _state.enabled = self._prev
        return False

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]  # functools.wraps keeps func's signature
