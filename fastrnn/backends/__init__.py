"""Backend registry.

A backend is a module that implements the contract of ``contract.Backend``
(``layer_forward``, ``layer_backward``, ``cell_forward``, ``cell_backward``).
``auto`` picks the first importable one of :data:`PREFERENCE`. A user forces
one per layer (``backend=``), globally (:func:`set_backend`) or with the
environment variable ``FASTRNN_BACKEND``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import overload

from .._optional import MissingExtraError

#: Backend names in the order ``auto`` tries them.
PREFERENCE = ("cpp", "numba", "numpy")
_MODULES = {"cpp": "fastrnn.backends.cpp", "numba": "fastrnn.backends.numba", "numpy": "fastrnn.backends.reference"}
_ALIASES = {"reference": "numpy", "c++": "cpp"}

_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
_global_choice: str | None = None
_warned_fallback = False
_num_threads: int | None = None


def _load(name: str) -> ModuleType | None:
    """Import backend ``name`` once; remember why it failed if it did."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            return None
        try:
            mod = importlib.import_module(_MODULES[name])
        except MissingExtraError as exc:  # an optional package it needs: the one-line pip advice
            _errors[name] = str(exc)
            return None
        except ImportError as exc:  # the backend is not there on this install
            _errors[name] = _diagnose_extension(str(exc)) if name == "cpp" else f"{type(exc).__name__}: {exc}"
            return None
        _loaded[name] = mod
        if _num_threads is not None and hasattr(mod, "set_num_threads"):
            mod.set_num_threads(_num_threads)
        return mod


def available_backends() -> list[str]:
    """Names of the backends that import on this install, best first."""
    return [name for name in PREFERENCE if _load(name) is not None]


def unavailable_backends() -> dict[str, str]:
    """Backends that failed to import, with the reason."""
    available_backends()
    return dict(_errors)


def _canonical(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string such as 'auto', 'cpp', 'numba' or 'numpy', got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key != "auto" and key not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {list(PREFERENCE)}")
    return key


@overload
def check_backend(name: str) -> str: ...
@overload
def check_backend(name: None) -> None: ...
def check_backend(name: str | None) -> str | None:
    """Validate a backend name now: return its canonical form, or raise if it is not available."""
    if name is None:
        return None
    key = _canonical(name)
    if key != "auto" and _load(key) is None:
        raise ValueError(
            f"backend {name!r} is not available ({_errors.get(key, 'not importable')}); "
            f"available backends: {available_backends()}"
        )
    return key


def _source_tree(package_dir: Path) -> Path | None:
    """The repository root if ``package_dir`` is fastrnn's source checkout (pyproject.toml and csrc/ beside it)."""
    root = package_dir.parent
    return root if (root / "pyproject.toml").is_file() and (root / "csrc").is_dir() else None


def _shadowed_install(package_dir: Path) -> Path | None:
    """Another ``fastrnn`` package further down ``sys.path`` than the one imported, if any."""
    here = package_dir.resolve()
    for entry in sys.path:
        candidate = Path(entry or os.getcwd()) / "fastrnn"
        try:
            if (candidate / "__init__.py").is_file() and candidate.resolve() != here:
                return candidate
        except OSError:  # an unreadable sys.path entry
            continue
    return None


def extension_problem() -> str | None:
    """Why the compiled extension does not load here, in one line with what to do; None if it loads.

    Three cases: fastrnn is imported from its source tree, which has no built
    ``_core`` (running Python from the repository root puts the checkout first
    on ``sys.path``, shadowing the installed package); the install has no
    extension (a pure-Python build); the extension is there but fails to load.
    """
    try:
        importlib.import_module("fastrnn.backends.cpp")
    except ImportError as exc:
        return _diagnose_extension(str(exc))
    return None


def _diagnose_extension(reason: str) -> str:
    """:func:`extension_problem` given the import error of the cpp backend."""
    package_dir = Path(__file__).resolve().parent.parent
    try:
        absent = importlib.util.find_spec("fastrnn._core") is None
    except (ImportError, ValueError):
        absent = True
    if not absent:
        return (f"the compiled extension is installed but does not load ({reason}); "
                "reinstall fastrnn: pip install --force-reinstall fastrnn")
    root = _source_tree(package_dir)
    if root is not None:
        installed = _shadowed_install(package_dir)
        where = (f"it shadows the installed fastrnn in {installed.parent}" if installed is not None
                 else "no installed fastrnn is on sys.path")
        return (f"fastrnn is imported from its source tree {root}, which has no compiled extension "
                f"({where}); run Python from another directory or with PYTHONSAFEPATH=1 (Python 3.11+), "
                "or build the extension in place with tools/dev-build.sh")
    return ("this install of fastrnn has no compiled extension (a pure-Python build: FASTRNN_NO_EXTENSION=1, "
            "or the C++ build failed); install a binary wheel, or reinstall with a C++17 compiler and CMake")


def _fallback_warning(chosen: str) -> str:
    """The one warning when auto cannot use the compiled extension, saying why and what to do."""
    return (f"fastrnn: the compiled extension is not available, using the {chosen!r} backend "
            f"(set FASTRNN_BACKEND={chosen} to choose it without this warning): {_errors['cpp']}")


def _auto() -> ModuleType:
    global _warned_fallback
    for name in PREFERENCE:
        mod = _load(name)
        if mod is not None:
            deliberate = os.environ.get("FASTRNN_NO_EXTENSION", "").lower() not in ("", "0", "false", "no")
            if name != "cpp" and not _warned_fallback and "cpp" in _errors and not deliberate:
                _warned_fallback = True
                warnings.warn(_fallback_warning(name), RuntimeWarning, stacklevel=3)
            return mod
    raise RuntimeError("no fastrnn backend could be imported")  # the numpy reference always imports


_resolved: dict[str, ModuleType] = {}  # name as given -> backend module (backends never change once imported)


def get_backend(name: str | None = None) -> ModuleType:
    """The backend module for ``name`` (None: the global choice, then FASTRNN_BACKEND, then auto)."""
    if name is None:
        name = _global_choice or os.environ.get("FASTRNN_BACKEND") or "auto"
    mod = _resolved.get(name)  # the hot path of every layer call
    if mod is None:
        key = check_backend(name)
        mod = _auto() if key == "auto" else _loaded[key]
        _resolved[name] = mod
    return mod


def set_backend(name: str | None) -> None:
    """Choose the backend every layer without its own ``backend=`` uses ('auto' or None resets)."""
    global _global_choice
    _global_choice = None if name is None else check_backend(name)
    if _global_choice == "auto":
        _global_choice = None


def default_num_threads() -> int:
    env = os.environ.get("FASTRNN_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"FASTRNN_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n >= 1:
            return n
        raise ValueError(f"FASTRNN_NUM_THREADS must be a positive integer, got {env!r}")
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on, as the kernels count
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Number of threads fastrnn's kernels use (all backends that thread)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    mods = [mod for mod in _loaded.values() if hasattr(mod, "set_num_threads")]
    prev = get_num_threads()
    try:
        for mod in mods:
            mod.set_num_threads(n)
    except Exception:  # a backend refused n (e.g. cpp: at most 4096): all keep the previous count
        for mod in mods:
            mod.set_num_threads(prev)
        raise
    _num_threads = n


def get_num_threads() -> int:
    """Number of threads fastrnn's kernels use."""
    return _num_threads if _num_threads is not None else default_num_threads()
