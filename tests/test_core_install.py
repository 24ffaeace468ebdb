"""The core install (NumPy + the compiled extension) and the optional extras.

Each optional feature, run without its package, raises ONE line that names the
``pip install "fastrnn[extra]"`` that brings it. The checks run in fresh
interpreters that hide the optional packages (``HIDE`` of test_fallback.py), so
they hold in a full environment; CI also runs this file in a virtual
environment that has only the wheel and NumPy, where the packages are truly
absent (.ci/run, "bare core install"). The file itself needs only pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import fastrnn
from fastrnn._optional import MissingExtraError, missing_message, require
from test_fallback import HIDE

#: every optional package fastrnn can use
OPTIONAL = ("numba", "llvmlite", "scipy", "cffi", "tqdm", "matplotlib", "threadpoolctl", "torch", "onnx",
            "onnxruntime")
HAVE_CPP = "cpp" in fastrnn.available_backends()


def run_hidden(code: str, hidden=OPTIONAL, args=()):
    """Run ``code`` in a fresh interpreter (outside the source tree) where ``hidden`` do not import."""
    child = f"NAMES = {tuple(hidden)!r}\nOPTIONAL = {OPTIONAL!r}\n" + HIDE + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k not in ("FASTRNN_BACKEND", "FASTRNN_NUM_THREADS")}
    env["PYTHONSAFEPATH"] = "1"
    return subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tempfile.gettempdir())


def one_line_error(proc, extra):
    """The child's last stderr line: the one-line message naming ``fastrnn[extra]``."""
    assert proc.returncode != 0, f"the child did not fail:\n{proc.stdout}"
    last = proc.stderr.strip().splitlines()[-1]
    assert f'pip install "fastrnn[{extra}]"' in last, proc.stderr
    return last


# ---------------------------------------------------------------------------
# the helper itself
# ---------------------------------------------------------------------------


def test_require_returns_the_module():
    import json

    assert require("json", extra="x", feature="f") is json


def test_require_names_the_extra_in_one_line():
    with pytest.raises(MissingExtraError) as err:
        require("fastrnn_no_such_package.sub", extra="train", feature="fastrnn.thing")
    msg = str(err.value)
    assert msg == missing_message("fastrnn_no_such_package.sub", extra="train", feature="fastrnn.thing")
    assert msg == 'fastrnn.thing needs fastrnn_no_such_package, which is not installed: pip install "fastrnn[train]"'
    assert "\n" not in msg
    assert isinstance(err.value, ImportError)  # callers that catch ImportError keep working


def test_require_keeps_the_error_of_a_broken_package(tmp_path, monkeypatch):
    """An installed package that fails on a dependency of its own is not reported as 'not installed'."""
    (tmp_path / "fastrnn_broken_pkg").mkdir()
    (tmp_path / "fastrnn_broken_pkg" / "__init__.py").write_text("import fastrnn_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:
        require("fastrnn_broken_pkg", extra="x", feature="f")
    assert not isinstance(err.value, MissingExtraError)
    assert err.value.name == "fastrnn_missing_dependency"


# ---------------------------------------------------------------------------
# the core install: import, a layer, nothing optional loaded
# ---------------------------------------------------------------------------

CORE = """
import sys
import numpy as np
import fastrnn

x = np.random.default_rng(0).standard_normal((6, 2, 3))
outs = {}
for backend in fastrnn.available_backends():
    m = fastrnn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=0)
    out, _ = m(x, lengths=[6, 4])
    dx, _ = m.backward(np.ones_like(out))
    outs[backend] = (out, dx, m.grads["weight_hh_l1_reverse"].copy())
for backend, got in outs.items():
    for a, b in zip(got, outs["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
print("BACKENDS", ",".join(outs))
print("LOADED", ",".join(sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL))))
"""


def test_core_runs_layers_without_any_optional_package():
    proc = run_hidden(CORE)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in proc.stdout.splitlines())
    expected = ["cpp", "numpy"] if HAVE_CPP else ["numpy"]
    assert lines["BACKENDS"].split(",") == expected
    assert lines["LOADED"] == ""  # no optional package was imported on the way


LAYER_CALL = """
import sys, numpy as np, fastrnn
fastrnn.LSTM(2, 3, backend="cpp")(np.zeros((2, 1, 2), np.float32))
print(sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL)))
"""


@pytest.mark.skipif(not HAVE_CPP, reason="this install has no compiled extension")
def test_core_import_loads_no_optional_package():
    """``import fastrnn`` and a layer call on the compiled backend load no optional package (SciPy at most:
    the next test holds that it stays out too)."""
    proc = run_hidden(LAYER_CALL, hidden=())
    assert proc.returncode == 0, proc.stderr
    assert set(eval(proc.stdout)) <= {"scipy"}, proc.stdout


@pytest.mark.skipif(not HAVE_CPP, reason="this install has no compiled extension")
def test_cpp_layer_call_does_not_import_scipy():
    proc = run_hidden(LAYER_CALL, hidden=())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


# ---------------------------------------------------------------------------
# each optional feature without its extra: one line naming the extra
# ---------------------------------------------------------------------------


def test_numba_backend_unavailable_says_which_extra():
    proc = run_hidden("""
    import fastrnn
    from fastrnn import backends
    print(fastrnn.available_backends())
    print(backends.unavailable_backends()["numba"])
    try:
        fastrnn.LSTM(2, 3, backend="numba")
    except ValueError as exc:
        print(exc)
    """)
    assert proc.returncode == 0, proc.stderr
    avail, reason, error = proc.stdout.strip().splitlines()
    assert "numba" not in avail
    assert reason == "the 'numba' backend needs numba, which is not installed: pip install \"fastrnn[numba]\""
    assert reason in error


def test_auto_goes_cpp_then_numpy_without_numba():
    proc = run_hidden("import fastrnn; print(fastrnn.get_backend('auto').NAME)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("cpp" if HAVE_CPP else "numpy")


@pytest.mark.skipif(not HAVE_CPP, reason="the C ABI lives in the compiled extension")
def test_capi_without_cffi():
    one_line_error(run_hidden("import fastrnn.capi"), "capi")


@pytest.mark.skipif(not HAVE_CPP, reason="the C ABI lives in the compiled extension")
def test_capi_njit_without_numba():
    one_line_error(run_hidden("import fastrnn.capi_njit"), "numba,capi")


def test_lbfgs_without_scipy():
    last = one_line_error(run_hidden("""
    import fastrnn
    fastrnn.optim.LBFGS(fastrnn.nn.SequenceModel(1, 4, 1))
    """), "train")
    assert "fastrnn.optim.LBFGS" in last


def test_fit_without_tqdm():
    one_line_error(run_hidden("""
    import numpy as np, fastrnn
    model = fastrnn.nn.SequenceModel(1, 4, 1, dtype=np.float64)
    x = np.zeros((5, 2, 1))
    fastrnn.train.fit(model, x, x, fastrnn.optim.Adam(model), epochs=1, progress=False)
    """), "train")


def test_sine_command_without_its_extra(tmp_path):
    proc = run_hidden("""
    import sys
    from fastrnn.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """, args=("sine", "--epochs", "1", "--out", str(tmp_path)))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, no traceback
    assert proc.stderr.startswith("fastrnn sine: error: fastrnn sine needs ")
    assert 'pip install "fastrnn[sine]"' in proc.stderr
    assert not any(tmp_path.iterdir())  # it stopped before training


def test_bench_report_plot_without_matplotlib():
    last = one_line_error(run_hidden("""
    import types
    from fastrnn.tools import bench_report
    bench_report.plot([types.SimpleNamespace(speedup=lambda peer: 2.0, group="g")], "plot.png")
    """), "bench")
    assert "--no-plot" in last


def test_info_without_optional_packages():
    proc = run_hidden("""
    import sys
    from fastrnn.__main__ import main
    sys.exit(main(["info"]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "threadpoolctl is not installed" in proc.stdout
    assert 'numba: unavailable (the \'numba\' backend needs numba, which is not installed: pip install "fastrnn[numba]")' \
        in proc.stdout


# ---------------------------------------------------------------------------
# the package's face: --version, the license, the type stubs
# ---------------------------------------------------------------------------


def test_version_option():
    proc = run_hidden("""
    import sys
    from fastrnn.__main__ import main
    main(["--version"])
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fastrnn {fastrnn.__version__}"


def test_installed_metadata_matches_the_package():
    """Where fastrnn is installed (not run from a checkout), its metadata has the package's version."""
    from importlib import metadata
    from pathlib import Path

    try:
        dist = metadata.distribution("fastrnn")
    except metadata.PackageNotFoundError:
        pytest.skip("fastrnn is not installed (run from the source tree)")
    if Path(str(dist.locate_file("fastrnn/__init__.py"))).resolve() != Path(fastrnn.__file__).resolve():
        pytest.skip("the fastrnn imported here is not the installed one (run from the source tree)")
    assert dist.version == fastrnn.__version__
    assert "MIT" in (dist.metadata.get("License-Expression"), dist.metadata.get("License"))
    core = [r for r in dist.metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].strip() for r in core] == ["numpy"]


def test_typing_files_ship_with_the_package():
    from pathlib import Path

    pkg = Path(fastrnn.__file__).parent
    assert (pkg / "py.typed").is_file()
    assert (pkg / "_core.pyi").is_file()
