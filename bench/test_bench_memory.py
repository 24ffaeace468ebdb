"""Peak memory of a training step (forward + backward): every fastrnn backend and
PyTorch on the same case, each in a fresh process (bench/memprobe.py: peak
resident memory during one warm call minus the resident memory before it,
allocator caches emptied first). The figure lands in the benchmark JSON as
``extra_info["peak_bytes"]`` (the timing of these entries is the probe's, not
the layer's: ignore it); ``fastrnn bench-report`` tabulates it.

Linux only (``/proc/self/clear_refs``); measured, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import impls
from cases import build_cases

HERE = os.path.dirname(os.path.abspath(__file__))

#: the training cases with real memory (H >= 128 or the seed workload), 1 thread
CASES = [c for c in build_cases()
         if c.mode == "train" and c.threads == 1 and c.kind in ("layer", "seed") and (c.H >= 128 or c.kind == "seed")
         and c.B > 1]
CASE_BY_ID = {c.id: c for c in CASES}
IMPLS = {i.name: i for i in impls.implementations() if i.name != "onnxruntime"}  # ORT: inference only


def _params():
    params = []
    for case in CASES:
        marks = [pytest.mark.bench_quick] if case.quick else []
        for name in IMPLS:
            params.append(pytest.param(case.id, name, id=f"mem-{case.id}-{name}", marks=marks))
    return params


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/self/clear_refs (Linux)")
@pytest.mark.parametrize(("case", "impl"), _params())
def test_train_peak_memory(benchmark, case, impl):
    spec = CASE_BY_ID[case]
    reason = IMPLS[impl].unavailable(spec) or IMPLS[impl].applies(spec)  # the timing suite's own rules
    if reason:
        pytest.skip(reason)
    result = {}

    def probe():
        env = dict(os.environ, PYTHONSAFEPATH="1")
        run = subprocess.run([sys.executable, os.path.join(HERE, "memprobe.py"), case, impl],
                             capture_output=True, text=True, env=env, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"memprobe failed:\n{run.stderr[-2000:]}")
        result.update(json.loads(run.stdout.strip().splitlines()[-1]))

    benchmark.group = "memory " + spec.group
    benchmark.extra_info.update(spec.extra_info())
    benchmark.extra_info.update(impl=impl, measure="peak_bytes")
    benchmark.pedantic(probe, rounds=1, iterations=1)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    benchmark.extra_info.update(peak_bytes=int(result["peak_bytes"]), baseline_bytes=int(result["baseline_bytes"]))
