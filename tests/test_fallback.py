"""fastrnn without its compiled extension, and without numba (in the spirit of
iminuit's ``_hide_modules``).

Each test runs a fresh interpreter that puts a meta-path finder in front of the
import system, so that importing the hidden modules fails exactly as it would
on an install that lacks them, and then imports fastrnn and checks what
``auto`` picks, that ONE RuntimeWarning says why, and that results agree with
the NumPy reference. A subprocess keeps the hiding away from this process's
already-imported modules and the registry's cached choices.

The cpp backend may or may not exist in this checkout (and may or may not be
built): the tests only assume what its absence implies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import fastrnn

HIDE = textwrap.dedent(
    """
    import importlib.abc, sys

    class _HideModules(importlib.abc.MetaPathFinder):
        '''Make importing any of NAMES (or their submodules) fail as if they were not installed.'''

        def __init__(self, names):
            self.names = tuple(names)

        def find_spec(self, fullname, path=None, target=None):
            if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
                raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by the test)", name=fullname)
            return None

    for _name in list(sys.modules):
        if any(_name == n or _name.startswith(n + ".") for n in NAMES):
            del sys.modules[_name]
    sys.meta_path.insert(0, _HideModules(NAMES))
    """
)

# Runs after HIDE in the child: one model through `auto`, compared with the reference.
CHECK = textwrap.dedent(
    """
    import warnings
    import numpy as np

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastrnn
        from fastrnn import backends

        avail = fastrnn.available_backends()
        chosen = fastrnn.get_backend().NAME
        rng = np.random.default_rng(0)
        x = rng.standard_normal((7, 3, 4))
        results = {}
        for backend in (None, "numpy"):
            for cls in (fastrnn.LSTM, fastrnn.GRU):
                m = cls(4, 5, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=1)
                out, _ = m(x, lengths=[7, 3, 5])
                dx, _ = m.backward(np.ones_like(out))
                results[backend, cls.__name__] = (out, dx, m.grads["weight_ih_l1"].copy())
        fastrnn.get_backend()  # asking again does not warn again
    for name in ("LSTM", "GRU"):
        for got, want in zip(results[None, name], results["numpy", name]):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    print("AVAILABLE", ",".join(avail))
    print("CHOSEN", chosen)
    print("NWARN", len(runtime))
    for w in runtime:
        print("WARNING", str(w.message).replace("\\n", " "))
    for name, why in backends.unavailable_backends().items():
        print("UNAVAILABLE", name, why)
    """
)


def _run(hidden, extra="", env_extra=None):
    code = f"NAMES = {tuple(hidden)!r}\n" + HIDE + CHECK + textwrap.dedent(extra)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTRNN_BACKEND", "FASTRNN_NUM_THREADS", "FASTRNN_NO_EXTENSION")}
    env.update(env_extra or {})
    # run outside the source tree: there ``import fastrnn`` would find the sources, not the install
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, f"child failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = {"WARNING": [], "UNAVAILABLE": {}}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "WARNING":
            report[key].append(value)
        elif key == "UNAVAILABLE":
            name, _, why = value.partition(" ")
            report[key][name] = why
        elif key in ("AVAILABLE", "CHOSEN", "NWARN"):
            report[key] = value
    report["AVAILABLE"] = [n for n in report["AVAILABLE"].split(",") if n]
    report["NWARN"] = int(report["NWARN"])
    return report


def _have_numba():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _have_numba(), reason="numba is not installed")
def test_without_compiled_extension_auto_picks_numba():
    r = _run(["fastrnn._core"])
    assert r["AVAILABLE"] == ["numba", "numpy"]
    assert r["CHOSEN"] == "numba"
    assert r["NWARN"] == 1, r["WARNING"]
    (msg,) = r["WARNING"]
    assert "numba" in msg
    assert "cpp" in r["UNAVAILABLE"]
    assert r["UNAVAILABLE"]["cpp"] in msg  # the warning says why: the import error of the cpp backend


def test_without_numba_auto_falls_back():
    """numba hidden: auto picks cpp where this install has it, else the NumPy reference."""
    have_cpp = "cpp" in fastrnn.available_backends()
    extra = """
    try:
        import fastrnn.backends.numba
    except ImportError as exc:
        assert "numba" in str(exc), exc
    else:
        raise AssertionError("the numba backend imported without numba")
    try:
        fastrnn.LSTM(2, 3, backend="numba")
    except ValueError as exc:
        assert "numba" in str(exc) and "available" in str(exc), exc
    else:
        raise AssertionError("asking for the missing numba backend did not raise")
    """
    r = _run(["numba"], extra)
    assert "numba" not in r["AVAILABLE"]
    assert "numba" in r["UNAVAILABLE"] and "numba" in r["UNAVAILABLE"]["numba"]
    if have_cpp:
        assert r["AVAILABLE"] == ["cpp", "numpy"]
        assert r["CHOSEN"] == "cpp"
        assert r["NWARN"] == 0, r["WARNING"]
    else:
        assert r["AVAILABLE"] == ["numpy"]
        assert r["CHOSEN"] == "numpy"
        assert r["NWARN"] == 1, r["WARNING"]
        assert r["UNAVAILABLE"]["cpp"] in r["WARNING"][0]


def test_without_extension_and_numba_auto_picks_the_reference():
    r = _run(["fastrnn._core", "numba"])
    assert r["AVAILABLE"] == ["numpy"]
    assert r["CHOSEN"] == "numpy"
    assert r["NWARN"] == 1, r["WARNING"]
    assert "numpy" in r["WARNING"][0]


@pytest.mark.skipif(not _have_numba(), reason="numba is not installed")
def test_forced_backend_does_not_warn():
    """FASTRNN_BACKEND=numba is a choice, not a fallback: no warning."""
    r = _run(["fastrnn._core"], env_extra={"FASTRNN_BACKEND": "numba"})
    assert r["CHOSEN"] == "numba"
    assert r["NWARN"] == 0, r["WARNING"]


@pytest.mark.skipif(not _have_numba(), reason="numba is not installed")
def test_deliberately_pure_install_does_not_warn():
    """FASTRNN_NO_EXTENSION=1 (a pure-Python install by choice): numba is picked silently."""
    r = _run(["fastrnn._core"], env_extra={"FASTRNN_NO_EXTENSION": "1"})
    assert r["AVAILABLE"] == ["numba", "numpy"]
    assert r["NWARN"] == 0, r["WARNING"]


@pytest.mark.skipif(not _have_numba(), reason="numba is not installed")
def test_warning_tells_what_to_do():
    r = _run(["fastrnn._core"])
    (msg,) = r["WARNING"]
    assert "FASTRNN_BACKEND=numba" in msg


def test_source_tree_without_extension_says_it_shadows_the_install(tmp_path):
    """Python started in a checkout that has no built ``_core`` imports the checkout, not the install:
    the warning and ``fastrnn info`` say so and how to avoid it."""
    import shutil
    from pathlib import Path

    pkg = Path(fastrnn.__file__).parent
    tree = tmp_path / "checkout"
    shutil.copytree(pkg, tree / "fastrnn", ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__"))
    (tree / "pyproject.toml").write_text("[project]\nname = 'fastrnn'\n")
    (tree / "csrc").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTRNN_BACKEND", "FASTRNN_NO_EXTENSION", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(pkg.parent)  # the fastrnn this test imported, further down sys.path than the checkout
    code = textwrap.dedent("""
        import warnings, numpy as np
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastrnn
            fastrnn.LSTM(2, 3)(np.zeros((2, 1, 2), np.float32))
        print(fastrnn.__file__)
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                print("WARNING", w.message)
        from fastrnn.tools.info import format_info, info
        print(format_info(info()))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tree)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert Path(lines[0]).resolve() == (tree / "fastrnn" / "__init__.py").resolve()
    warns = [line for line in lines if line.startswith("WARNING")]
    assert len(warns) == 1, proc.stdout
    for text in (warns[0], next(line for line in lines if line.startswith("extension:"))):
        assert f"imported from its source tree {tree}" in text
        assert f"shadows the installed fastrnn in {pkg.parent}" in text
        assert "PYTHONSAFEPATH=1" in text and "another directory" in text
        assert "pure-Python" not in text
