"""``fastrnn info``: the dict, the text, the CLI and its --json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import types

import pytest

import fastrnn
from fastrnn.tools import info as info_mod


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True, text=True, timeout=300)


def test_info_dict_describes_this_install():
    d = info_mod.info()
    assert d["fastrnn"] == fastrnn.__version__
    assert d["backends"]["available"] == fastrnn.available_backends()
    assert "numpy" in d["backends"]["available"]  # the reference always imports
    assert d["backends"]["auto"] == fastrnn.get_backend("auto").NAME
    assert d["backends"]["auto"] in d["backends"]["available"]
    for name, reason in d["backends"]["unavailable"].items():
        assert name not in d["backends"]["available"] and reason
    assert d["num_threads"] == fastrnn.get_num_threads()
    assert set(d["packages"]) >= {"numpy", "scipy", "numba", "torch", "onnxruntime"}
    assert isinstance(d["blas"], list) or (d["blas"] is None and d["packages"]["threadpoolctl"] is None)
    json.dumps(d)  # JSON-serializable as it is


def test_info_text_names_the_essentials():
    d = info_mod.info()
    text = info_mod.format_info(d)
    assert f"fastrnn {fastrnn.__version__}" in text
    assert f"auto -> {d['backends']['auto']}" in text
    assert f"threads: {d['num_threads']}" in text
    for name in d["backends"]["unavailable"]:
        assert f"{name}: unavailable" in text


def test_build_info_present_has_the_documented_fields():
    facts = info_mod.build_info()
    if not facts["available"]:
        pytest.skip(f"extension not built: {facts['error']}")
    assert {"version", "compiler", "cxx_flags", "build_type", "simd"} <= set(facts)
    from fastrnn import _core

    assert facts["cache_limit_bytes"] == _core.get_cache_limit()
    assert 0 <= facts["cache_held_bytes"] <= facts["cache_limit_bytes"]
    assert "block cache: limit" in info_mod.format_info(info_mod.info())


def test_build_info_without_the_extension(monkeypatch):
    monkeypatch.delattr(fastrnn, "_core", raising=False)
    monkeypatch.setitem(sys.modules, "fastrnn._core", None)  # import now fails
    facts = info_mod.build_info()
    assert facts["available"] is False and "compiled extension" in facts["error"]
    assert "\n" not in facts["error"] and "ImportError" not in facts["error"]  # one readable line
    text = info_mod.format_info({**info_mod.info(), "build": facts})
    assert "extension: not available" in text


def test_build_info_of_an_extension_without_build_info(monkeypatch):
    monkeypatch.setattr(fastrnn, "_core", types.ModuleType("fastrnn._core"), raising=False)
    monkeypatch.setitem(sys.modules, "fastrnn._core", fastrnn._core)
    facts = info_mod.build_info()
    assert facts["available"] is True and "no build_info" in facts["error"]


def test_info_does_not_import_torch():
    code = "import sys, fastrnn.tools.info as i; i.info(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cli_info_text():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert f"fastrnn {fastrnn.__version__}" in out.stdout
    assert "backends: available" in out.stdout


def test_cli_info_json_parses():
    out = run_cli("info", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["fastrnn"] == fastrnn.__version__
    assert "numpy" in d["backends"]["available"]
    assert isinstance(d["num_threads"], int) and d["num_threads"] >= 1


def test_info_jit_times_of_the_numba_backend():
    pytest.importorskip("numba")
    proc = run_cli("info", "--jit", "--json")
    assert proc.returncode == 0, proc.stderr
    times = json.loads(proc.stdout)["numba_first_call_seconds"]
    assert set(times) == {"LSTM", "GRU", "RNN"}
    for phases in times.values():
        for phase in ("cold", "warm"):
            fwd, bwd = phases[phase]
            assert 0 < fwd < 600 and 0 < bwd < 600


def test_info_reports_the_simd_path_that_runs():
    """build_info's "simd" is the compile-time baseline (SSE2 on x86-64); info shows the path
    the kernels dispatch to at run time (e.g. AVX2), and the baseline beside it."""
    core = pytest.importorskip("fastrnn._core")
    if not hasattr(core, "simd_path"):
        pytest.skip("this extension does not report its run-time SIMD path")
    from fastrnn.tools import info

    build = info.info()["build"]
    assert build["simd"] == core.simd_path()
    assert build["simd_baseline"] == core.build_info()["simd"]
    assert f"simd {core.simd_path()}" in info.format_info(info.info())


def test_info_reports_the_reduced_precision_instructions():
    """The int8/bfloat16 instructions the CPU has, as Linux's /proc/cpuinfo lists them."""
    core = pytest.importorskip("fastrnn._core")
    if not hasattr(core, "reduced_precision_features"):
        pytest.skip("this extension does not report them")
    from fastrnn.tools import info

    have = core.reduced_precision_features()
    assert set(have) <= set(core.REDUCED_PRECISION_FEATURES)
    assert have == [f for f in core.REDUCED_PRECISION_FEATURES if f in have]  # in the documented order
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        flags = None
    if flags is not None and sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
        # cpuinfo also hides what the kernel disabled (e.g. AMX without OS support): only ours ⊆ theirs
        # is certain for AMX; VNNI and BF16 are plain CPUID bits both read alike
        assert {f for f in have if not f.startswith("amx")} == \
            {f for f in core.REDUCED_PRECISION_FEATURES if f in flags and not f.startswith("amx")}
    text = info.format_info(info.info())
    assert "reduced precision: this CPU has" in text
    for f in have:
        assert f in text
    assert info.info()["build"]["reduced_precision"] == have
