"""``fastrnn info``: what this install of fastrnn is and runs with.

Version, backends (available, the one ``auto`` picks, the unavailable ones and
why), thread count, how the compiled extension was built, the BLAS libraries
NumPy and SciPy use, and the versions of the optional peers. ``--json`` prints
the same as JSON (the benchmark suite stores it with its results).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import warnings
from typing import Any

#: Packages whose versions are reported (read from their metadata, not imported).
PACKAGES = ("numpy", "scipy", "numba", "threadpoolctl", "cffi", "tqdm", "matplotlib", "torch", "onnx", "onnxruntime")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_info() -> dict[str, Any]:
    """The compiled extension's build facts, or ``{"available": False, "error": ...}`` (one line: why, what to do)."""
    try:
        from .. import _core
    except ImportError:
        from ..backends import extension_problem

        return {"available": False, "error": extension_problem() or "the compiled extension fastrnn._core does not import"}
    facts = getattr(_core, "build_info", None)
    if facts is None:
        return {"available": True, "error": "fastrnn._core has no build_info()"}
    out = {"available": True, **dict(facts())}
    if hasattr(_core, "simd_path"):  # build_info's "simd" is the compile-time baseline; this is what runs
        out["simd_baseline"] = out.get("simd")
        out["simd"] = str(_core.simd_path())
    if hasattr(_core, "reduced_precision_features"):  # what int8/bfloat16 kernels would dispatch on (issue 16)
        out["reduced_precision"] = [str(f) for f in _core.reduced_precision_features()]
    if hasattr(_core, "get_cache_limit"):
        out["cache_limit_bytes"] = int(_core.get_cache_limit())
        out["cache_held_bytes"] = int(_core.cached_bytes())
    return out


def blas_info() -> list[dict[str, Any]] | None:
    """Native thread pools loaded now (NumPy's and SciPy's BLAS, OpenMP), from threadpoolctl.

    None when threadpoolctl is not installed (it comes with ``fastrnn[numba]``).
    """
    import numpy  # noqa: F401 - make sure the BLAS libraries are loaded

    try:
        import scipy.linalg  # noqa: F401 - SciPy's BLAS, where SciPy is installed
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
    return [{k: pool.get(k) for k in keys if k in pool} for pool in threadpool_info()]


def info() -> dict[str, Any]:
    """Everything ``fastrnn info`` prints, as a JSON-serializable dict."""
    import fastrnn
    from fastrnn import backends

    available = backends.available_backends()
    try:
        with warnings.catch_warnings():  # the fallback warning: reported below as an unavailable backend
            warnings.simplefilter("ignore", RuntimeWarning)
            auto = backends.get_backend("auto").NAME
    except Exception as exc:  # noqa: BLE001 - report, do not fail, in a diagnostic command
        auto = f"error: {exc}"
    return {
        "fastrnn": fastrnn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "backends": {
            "available": available,
            "auto": auto,
            "unavailable": backends.unavailable_backends(),
        },
        "num_threads": fastrnn.get_num_threads(),
        "build": build_info(),
        "blas": blas_info(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def format_info(d: dict[str, Any]) -> str:
    """The human-readable text of :func:`info`."""
    lines = [f"fastrnn {d['fastrnn']} (Python {d['python']}, {d['platform']})"]
    b = d["backends"]
    lines.append(f"backends: available {', '.join(b['available']) or 'none'}; auto -> {b['auto']}")
    build = d["build"]
    for name, reason in b["unavailable"].items():
        if name == "cpp" and reason == build.get("error"):
            reason = "no compiled extension, see below"
        lines.append(f"  {name}: unavailable ({reason})")
    lines.append(f"threads: {d['num_threads']}")
    if not build.get("available"):
        lines.append(f"extension: not available: {build.get('error')}")
    elif "error" in build:
        lines.append(f"extension: {build['error']}")
    else:
        facts = [k for k in build if k not in ("available", "cache_limit_bytes", "cache_held_bytes",
                                               "reduced_precision")]
        lines.append("extension: " + ", ".join(f"{k} {build[k]}" for k in facts))
        if "reduced_precision" in build:
            have = ", ".join(build["reduced_precision"]) or "none"
            lines.append(f"reduced precision: this CPU has {have}; the kernels compute in float32 and float64 only "
                         "(no int8 or bfloat16 kernel yet)")
        if "cache_limit_bytes" in build:
            lines.append(f"block cache: limit {build['cache_limit_bytes'] / 2**20:.0f} MiB "
                         f"(FASTRNN_CACHE_MB), holding {build['cache_held_bytes'] / 2**20:.1f} MiB")
    if d["blas"] is None:
        lines.append("native thread pools: not listed (threadpoolctl is not installed; pip install threadpoolctl)")
    elif d["blas"]:
        lines.append("native thread pools:")
        for pool in d["blas"]:
            lines.append(
                f"  {pool.get('internal_api')} {pool.get('version') or ''} ({pool.get('user_api')}, "
                f"{pool.get('num_threads')} threads) {pool.get('filepath')}"
            )
    lines.append("packages: " + ", ".join(f"{k} {v or '-'}" for k, v in d["packages"].items()))
    return "\n".join(lines)


_JIT_PROBE = """
import time, numpy as np, fastrnn
t0 = time.perf_counter()
for cls in (fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN):
    layer = cls(3, 8, backend="numba", seed=0)
    t = time.perf_counter()
    out, _ = layer(np.zeros((4, 2, 3), np.float32))
    t1 = time.perf_counter()
    layer.backward(np.ones_like(out))
    t2 = time.perf_counter()
    print(cls.__name__, t1 - t, t2 - t1)
"""


def jit_times() -> dict[str, dict[str, tuple[float, float]]]:
    """First-call time of the Numba backend's layers (float32 forward and backward),
    with a cold on-disk cache (compiling) and then a warm one (loading), each in a
    fresh process. Returns {layer: {"cold": (fwd_s, bwd_s), "warm": (fwd_s, bwd_s)}}."""
    import os
    import subprocess
    import sys
    import tempfile

    result: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONSAFEPATH="1")
        for phase in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _JIT_PROBE], capture_output=True, text=True, env=env,
                                  cwd=cache, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"the numba probe failed: {proc.stderr.strip().splitlines()[-1:]}")
            for line in proc.stdout.split("\n"):
                if line.strip():
                    name, fwd, bwd = line.split()
                    result.setdefault(name, {})[phase] = (float(fwd), float(bwd))
    return result


def main(args: argparse.Namespace) -> int:
    d = info()
    if args.jit:
        if "numba" in d["backends"]["available"]:
            d["numba_first_call_seconds"] = jit_times()
        else:
            d["numba_first_call_seconds"] = "numba backend not available"
    text = json.dumps(d, indent=2) if args.json else format_info(d)
    if args.jit and not args.json:
        jt = d["numba_first_call_seconds"]
        if isinstance(jt, str):
            text += f"\nnumba first call: {jt}"
        else:
            text += "\nnumba first call (forward + backward, float32), cold cache = compile, warm = load:"
            for name, ph in jt.items():
                text += (f"\n  {name}: cold {ph['cold'][0]:.2f} s + {ph['cold'][1]:.2f} s, "
                         f"warm {ph['warm'][0]:.3f} s + {ph['warm'][1]:.3f} s")
    print(text)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="version, backends, threads, build and BLAS of this install",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--jit", action="store_true",
                        help="also measure the Numba backend's first-call (JIT compile / cache load) times "
                             "in fresh processes (takes some seconds)")
    parser.set_defaults(func=main)
    return parser
