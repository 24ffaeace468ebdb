"""Peak memory of one call of one implementation on one case, in a fresh process.

``python bench/memprobe.py CASE_ID IMPL`` prints a JSON object
``{"peak_bytes": ..., "baseline_bytes": ...}``. The call is run once untimed
(warm-up: JIT, primitive caches, lazily built state), then every allocator
cache that holds freed memory is emptied (glibc's ``malloc_trim``, fastrnn's
block cache), the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``
= 5, Linux), and the call runs again: ``peak_bytes`` = peak resident memory
during that call minus the resident memory just before it (inputs, weights
and the libraries are in the baseline; what the call itself needs is the
difference). Used by ``test_bench_memory.py``; Linux only.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import impls  # noqa: E402
from cases import build_cases, case_data  # noqa: E402


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _drop_caches() -> None:
    gc.collect()
    try:
        from fastrnn.backends import cpp

        cpp.release_cache()
    except ImportError:
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def probe(case_id: str, impl_name: str) -> dict:
    case = {c.id: c for c in build_cases()}[case_id]
    impl = {i.name: i for i in impls.implementations()}[impl_name]
    reason = impl.unavailable(case) or impl.applies(case)
    if reason:
        return {"skipped": reason}
    data = case_data(case)
    with impl.threads(case.threads):
        fn, _ = impl.prepare(case, data)
        result = fn()
        del result
        _drop_caches()
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        result = fn()
        peak = _status_kb("VmHWM")
        del result
    return {"peak_bytes": (peak - before) * 1024, "baseline_bytes": before * 1024}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2])))
