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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import SupportsInt, overload

from .._optional import MissingExtraError

from .._validate import thread_count

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
        if hasattr(mod, "set_num_threads"):
            _give_threads(mod)
        return mod


def _give_threads(mod: ModuleType) -> None:
    """Set a newly imported backend's count to get_num_threads() explicitly, so that what
    get_num_threads() reports is what its kernels use (whatever they read at start-up)."""
    global _env_refused
    try:
        mod.set_num_threads(_current_threads())
    except ValueError as exc:  # only a FASTRNN_NUM_THREADS beyond the backend's bound gets here
        if _num_threads is not None:
            raise
        _env_refused = True
        _warn_env(f"{os.environ.get('FASTRNN_NUM_THREADS')!r} is refused by the {mod.NAME} backend ({exc})")
        mod.set_num_threads(_current_threads())


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


def _env_reader(key: str) -> Callable[[], str | None]:
    """A reader of ``os.environ.get(key)`` for the hot path of every layer call.

    ``os.environ.get`` of a variable that is not set raises and catches a
    KeyError inside the Mapping machinery: ~1 us per call, a tenth of a cell
    step. CPython's ``os.environ`` keeps its values in a dict of encoded keys
    (``_data``) that every change made through ``os.environ`` updates, so the
    reader looks there (a change at run time, such as pytest's
    ``monkeypatch.setenv``, is seen at the next call); where that dict is not
    there, it calls ``os.environ.get``.
    """
    env = os.environ
    data = getattr(env, "_data", None)
    encode = getattr(env, "encodekey", None)
    decode = getattr(env, "decodevalue", None)
    if isinstance(data, dict) and callable(encode) and callable(decode):
        encoded = encode(key)

        def read() -> str | None:
            raw = data.get(encoded)
            return None if raw is None else decode(raw)

        return read
    return lambda: os.environ.get(key)


_backend_env = _env_reader("FASTRNN_BACKEND")


def get_backend(name: str | None = None) -> ModuleType:
    """The backend module for ``name`` (None: the global choice, then FASTRNN_BACKEND, then auto)."""
    if name is None:
        name = _global_choice or _backend_env() or "auto"
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


_env_warned = False
_env_refused = False  # FASTRNN_NUM_THREADS was valid for Python but refused by a backend
_oversubscribed_warned: set[int] = set()


def _warn_env(why: str) -> None:
    global _env_warned
    if not _env_warned:
        _env_warned = True
        warnings.warn(f"fastrnn: ignoring FASTRNN_NUM_THREADS: {why}; using the default, one thread per CPU "
                      f"({_cpus()})", RuntimeWarning, stacklevel=4)


def _cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share), as the kernels count them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _env_threads() -> int | None:
    """FASTRNN_NUM_THREADS as a count; None if unset or bad (a bad value warns once)."""
    env = os.environ.get("FASTRNN_NUM_THREADS", "").strip()
    if not env or _env_refused:
        return None
    try:
        return thread_count(int(env), "FASTRNN_NUM_THREADS")
    except (ValueError, TypeError):
        _warn_env(f"{env!r} is not a positive integer")
        return None


def default_num_threads() -> int:
    """FASTRNN_NUM_THREADS if it is a positive integer (a bad value warns once and is ignored),
    else the number of CPUs this process may run on."""
    n = _env_threads()
    return _cpus() if n is None else n


def _warn_oversubscribed(n: int) -> None:
    cpus = _cpus()
    if n > cpus and n not in _oversubscribed_warned:
        _oversubscribed_warned.add(n)
        warnings.warn(f"fastrnn: {n} threads on {cpus} CPU(s): the kernels' threads meet at a barrier every "
                      "time step, and with more threads than CPUs each step waits for descheduled ones (tens of "
                      f"times slower for small batches); set_num_threads({cpus}) or fewer is faster",
                      RuntimeWarning, stacklevel=3)


def set_num_threads(n: SupportsInt) -> None:
    """Number of threads fastrnn's kernels use (all backends that thread); wins over FASTRNN_NUM_THREADS.

    ``n``: an integer of any kind >= 1; a count a backend cannot run (the cpp kernels: at most
    4096) raises ValueError here and changes nothing. More threads than CPUs warns (once per count).
    """
    global _num_threads
    n = thread_count(n)
    _load("cpp")  # the backend with an upper bound: imported now so that it checks n at this call
    with _lock:
        mods = [mod for mod in _loaded.values() if hasattr(mod, "set_num_threads")]
    prev = _current_threads()
    try:
        for mod in mods:
            mod.set_num_threads(n)
    except Exception:  # a backend refused n (e.g. cpp: at most 4096): all keep the previous count
        for mod in mods:
            mod.set_num_threads(prev)
        raise
    _num_threads = n
    _warn_oversubscribed(n)


def _current_threads() -> int:
    return _num_threads if _num_threads is not None else default_num_threads()


def get_num_threads() -> int:
    """Number of threads fastrnn's kernels use (the last set_num_threads, else the default)."""
    if _num_threads is None:
        _load("cpp")  # a FASTRNN_NUM_THREADS the kernels refuse is found out (and replaced) here
    return _current_threads()
