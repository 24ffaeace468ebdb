"""One rule for the thread count: checked at the call (integers of any kind), a bad
FASTRNN_NUM_THREADS warns once and falls back to the default, an explicit call
wins, and get_num_threads() is what the kernels use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import backends

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
HAS_CPP = "cpp" in fastrnn.available_backends()


@pytest.fixture
def restore():
    before = fastrnn.get_num_threads()
    yield
    fastrnn.set_num_threads(before)


def _fresh(code, env_value=None):
    """Run ``code`` in a new interpreter (nothing imported yet); its last line prints JSON."""
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_NUM_THREADS"}
    if env_value is not None:
        env["FASTRNN_NUM_THREADS"] = env_value
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


PROBE = """
import json, warnings
import fastrnn
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    n = fastrnn.get_num_threads()
    fastrnn.get_num_threads()
    kernels = None
    if "cpp" in fastrnn.available_backends():
        from fastrnn.backends import cpp
        kernels = cpp.get_num_threads()
    fastrnn.set_num_threads(1)
    after = [fastrnn.get_num_threads(), cpp.get_num_threads() if kernels is not None else 1]
print(json.dumps(dict(n=n, kernels=kernels, after=after, warnings=[str(x.message) for x in w])))
"""


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5", " "])
def test_bad_environment_value_warns_once_and_falls_back(value):
    res, _ = _fresh(PROBE, value)
    assert res["n"] == CPUS
    if res["kernels"] is not None:
        assert res["kernels"] == res["n"]  # what is reported is what the kernels use
    assert res["after"] == [1, 1]  # an explicit call always wins
    env_warnings = [m for m in res["warnings"] if "FASTRNN_NUM_THREADS" in m]
    assert len(env_warnings) == (0 if value.strip() == "" else 1), res["warnings"]


@pytest.mark.skipif(not HAS_CPP, reason="the cpp backend (whose kernels read the variable) is not available")
def test_environment_value_beyond_the_kernels_bound_falls_back():
    res, _ = _fresh(PROBE, "5000")
    assert res["n"] == res["kernels"] == CPUS
    assert any("FASTRNN_NUM_THREADS" in m for m in res["warnings"])


def test_good_environment_value_is_what_the_kernels_use():
    res, _ = _fresh(PROBE, "1")
    assert res["n"] == 1
    if res["kernels"] is not None:
        assert res["kernels"] == 1


@pytest.mark.skipif(not HAS_CPP, reason="the cpp backend (the one with an upper bound) is not available")
def test_out_of_range_count_is_refused_at_the_call_before_any_layer_ran():
    """The cpp backend is not imported yet when set_num_threads runs: still refused there, at once."""
    code = """
import json, fastrnn, numpy as np
before = fastrnn.get_num_threads()
try:
    fastrnn.set_num_threads(5000)
    err = None
except ValueError as e:
    err = str(e)
lstm = fastrnn.LSTM(2, 3)
lstm(np.ones((2, 1, 2), np.float32))
from fastrnn.backends import cpp
print(json.dumps(dict(err=err, before=before, after=fastrnn.get_num_threads(), kernels=cpp.get_num_threads())))
"""
    res, _ = _fresh(code)
    assert res["err"] and "4096" in res["err"]
    assert res["after"] == res["before"] == res["kernels"]


@pytest.mark.parametrize("n", [np.int64(1), np.int32(2), np.uint8(1), 2])
def test_integers_of_any_kind(n, restore):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 2 threads on a 1-CPU machine
        fastrnn.set_num_threads(n)
    assert fastrnn.get_num_threads() == int(n)
    assert type(fastrnn.get_num_threads()) is int
    for mod in backends._loaded.values():
        if hasattr(mod, "get_num_threads"):
            assert mod.get_num_threads() == int(n)


@pytest.mark.parametrize("n, err", [(0, ValueError), (-3, ValueError), (np.int64(0), ValueError), (2.5, TypeError),
                                    ("2", TypeError), (True, TypeError), (None, TypeError), (2.0, TypeError)])
def test_bad_counts_are_refused_naming_n(n, err, restore):
    before = fastrnn.get_num_threads()
    with pytest.raises(err, match="n must be"):
        fastrnn.set_num_threads(n)
    assert fastrnn.get_num_threads() == before


def test_more_threads_than_cpus_warns(restore):
    with pytest.warns(RuntimeWarning, match="threads on .* CPU"):
        fastrnn.set_num_threads(CPUS + 1)
    assert fastrnn.get_num_threads() == CPUS + 1  # the explicit call wins; the warning says what it costs


@pytest.mark.skipif(not HAS_CPP, reason="the cpp backend (whose kernels read the variable) is not available")
def test_bad_cache_environment_value_warns():
    """FASTRNN_CACHE_MB is read by the kernels like FASTRNN_NUM_THREADS: a bad value is not silent."""
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_CACHE_MB"}
    env["FASTRNN_CACHE_MB"] = "lots"
    r = subprocess.run([sys.executable, "-W", "always", "-c", "import fastrnn.backends.cpp"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "FASTRNN_CACHE_MB" in r.stderr
