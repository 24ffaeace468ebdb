"""pytest options of the benchmark suite (run from the repository root: ``pytest bench``).

``--bench-quick`` (or ``FASTRNN_BENCH=quick``) selects the smoke-test subset and
shortens the rounds; ``--bench-full`` (the default) runs the whole grid. See
bench/README.md.
"""

from __future__ import annotations

import os

import pytest

#: pytest-benchmark settings of the quick mode, unless given on the command line.
QUICK_BENCHMARK_OPTIONS = {"benchmark_max_time": ("--benchmark-max-time", 0.1),
                           "benchmark_min_rounds": ("--benchmark-min-rounds", 3)}


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn-bench", "fastrnn benchmark suite")
    group.addoption("--bench-quick", action="store_true", default=False,
                    help="run the quick subset with few rounds (CI smoke test; also FASTRNN_BENCH=quick)")
    group.addoption("--bench-full", action="store_true", default=False,
                    help="run the full grid (the default; overrides FASTRNN_BENCH=quick)")


def bench_quick(config) -> bool:
    if config.getoption("bench_full"):
        return False
    return bool(config.getoption("bench_quick")) or os.environ.get("FASTRNN_BENCH", "").strip().lower() == "quick"


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on this platform
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config._fastrnn_bench_load_start = _loadavg()
    config.addinivalue_line("markers", "bench_quick: part of the quick benchmark subset (--bench-quick)")
    if config.getoption("bench_quick") and config.getoption("bench_full"):
        raise pytest.UsageError("--bench-quick and --bench-full exclude each other")
    if bench_quick(config):
        # Runs before pytest-benchmark's own pytest_configure reads these options.
        given = " ".join(str(a) for a in config.invocation_params.args)
        for dest, (flag, value) in QUICK_BENCHMARK_OPTIONS.items():
            if flag not in given:
                setattr(config.option, dest, value)


def pytest_collection_modifyitems(config, items):
    if not bench_quick(config):
        return
    keep, drop = [], []
    for item in items:
        (keep if item.get_closest_marker("bench_quick") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    import fastrnn

    mode = "quick" if bench_quick(config) else "full"
    return [f"fastrnn bench: {mode} grid; fastrnn {fastrnn.__version__}, backends {fastrnn.available_backends()}"]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers were measured with (fastrnn info, machine load) in the JSON."""
    machine_info["loadavg_start"] = getattr(config, "_fastrnn_bench_load_start", None)
    machine_info["loadavg_end"] = _loadavg()
    try:
        from fastrnn.tools.info import info
    except ImportError:
        try:  # an install from before fastrnn.tools
            from fastrnn.info import info
        except ImportError:  # an install older than fastrnn.info
            return
    machine_info["fastrnn"] = info()
