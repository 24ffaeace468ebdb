"""``no_grad``: forwards that keep nothing for backward (the inference path)."""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside ``with fastrnn.no_grad():`` on this thread."""
    return getattr(_state, "enabled", True)


class no_grad:  # noqa: N801 - named as in PyTorch
    """Context manager (and decorator) under which forwards keep no state for backward."""

    __slots__ = ("_prev",)  # entered once per call of a cell in a loop: keep it cheap

    def __enter__(self):
        self._prev = getattr(_state, "enabled", True)
        _state.enabled = False
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with no_grad():
                return func(*args, **kwargs)

        return wrapper
