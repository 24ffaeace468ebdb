"""Time and peak memory of the layers' output layouts: bidirectional and batch_first.

The benchmark grid (``cases.py``) runs one direction, time-major; this script
measures what the layers add around the kernels for the other layouts (the
directions' outputs, batch_first on the way in and out, their gradients), on
fastrnn's public API with the cpp backend, 1 thread.

``python bench/layout.py CASE MODE`` runs one case in this process and prints
a JSON object: ``median_s`` and ``spread`` ((max - min) / median over the
repeats) of one call, and ``peak_bytes`` (peak resident memory during one warm
call minus the resident memory before it, allocator caches emptied first, as
``memprobe.py``). MODE is ``infer`` (forward under ``no_grad``) or ``train``
(forward + backward).

``python bench/layout.py --ab TREE_A TREE_B [--rounds N] [--repeats R]`` compares two source
trees (each with its compiled module): every case and mode in a fresh process,
A and B alternating, N rounds; it prints the median of the rounds' medians and
the spread per tree. Linux only (``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time

#: name -> (layer class, B, T, I, H, bidirectional, batch_first, num_layers)
CASES = {
    "lstm-bidir": ("LSTM", 16, 200, 128, 256, True, False, 1),
    "lstm-bidir-2layers": ("LSTM", 16, 200, 128, 256, True, False, 2),
    "lstm-batch-first": ("LSTM", 16, 200, 128, 256, False, True, 1),
    "gru-bidir-batch-first": ("GRU", 32, 100, 64, 128, True, True, 1),
}
MODES = ("infer", "train")


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _drop_caches():
    from fastrnn.backends import cpp

    gc.collect()
    cpp.release_cache()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_one(case, mode, repeats=15):
    import numpy as np

    import fastrnn

    cls, B, T, I, H, bidir, batch_first, layers = CASES[case]
    fastrnn.set_num_threads(1)
    layer = getattr(fastrnn, cls)(I, H, num_layers=layers, bidirectional=bidir, batch_first=batch_first,
                                  dtype=np.float32, backend="cpp", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    go = rng.standard_normal((B, T, (2 if bidir else 1) * H) if batch_first else (T, B, (2 if bidir else 1) * H))
    go = go.astype(np.float32)

    def call():
        if mode == "infer":
            with fastrnn.no_grad():
                return layer(x)
        out = layer(x)
        return out, layer.backward(go)

    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    _drop_caches()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    result = call()
    peak = _status_kb("VmHWM")
    del result
    med = statistics.median(times)
    return {"median_s": med, "spread": (max(times) - min(times)) / med, "peak_bytes": (peak - before) * 1024}


def ab(tree_a, tree_b, rounds, repeats):
    here = os.path.abspath(__file__)
    results = {}
    for r in range(rounds):
        for case in CASES:
            for mode in MODES:
                for label, tree in (("A", tree_a), ("B", tree_b)) if r % 2 == 0 else (("B", tree_b), ("A", tree_a)):
                    env = dict(os.environ, PYTHONPATH=tree, PYTHONSAFEPATH="1", FASTRNN_NUM_THREADS="1")
                    run = subprocess.run([sys.executable, here, case, mode, "--repeats", str(repeats)], capture_output=True, text=True, env=env,
                                         cwd=tree, timeout=900)
                    if run.returncode != 0:
                        raise RuntimeError(run.stderr[-2000:])
                    results.setdefault((case, mode, label), []).append(json.loads(run.stdout.splitlines()[-1]))
                    print(f"round {r + 1}/{rounds} {case} {mode} {label}: {run.stdout.splitlines()[-1]}",
                          file=sys.stderr, flush=True)
    print(f"{'case':24} {'mode':6} {'A ms':>8} {'B ms':>8} {'B/A':>6} {'A spread':>9} {'B spread':>9} "
          f"{'A peak MB':>10} {'B peak MB':>10}")
    for case in CASES:
        for mode in MODES:
            a, b = results[(case, mode, "A")], results[(case, mode, "B")]
            ta = statistics.median(x["median_s"] for x in a)
            tb = statistics.median(x["median_s"] for x in b)
            sa = (max(x["median_s"] for x in a) - min(x["median_s"] for x in a)) / ta
            sb = (max(x["median_s"] for x in b) - min(x["median_s"] for x in b)) / tb
            pa = statistics.median(x["peak_bytes"] for x in a) / 1e6
            pb = statistics.median(x["peak_bytes"] for x in b) / 1e6
            print(f"{case:24} {mode:6} {ta * 1e3:8.2f} {tb * 1e3:8.2f} {tb / ta:6.3f} {sa:9.1%} {sb:9.1%} "
                  f"{pa:10.1f} {pb:10.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", nargs="?", choices=list(CASES))
    p.add_argument("mode", nargs="?", choices=MODES)
    p.add_argument("--ab", nargs=2, metavar=("TREE_A", "TREE_B"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed calls per process")
    args = p.parse_args()
    if args.ab:
        ab(*(os.path.abspath(t) for t in args.ab), args.rounds, args.repeats)
    elif args.case and args.mode:
        print(json.dumps(run_one(args.case, args.mode, args.repeats)))
    else:
        p.error("give CASE MODE, or --ab TREE_A TREE_B")


if __name__ == "__main__":
    main()
