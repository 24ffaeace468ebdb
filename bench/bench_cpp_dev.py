"""Developer timing of the cpp backend against PyTorch in the same process.

Not part of the pytest-benchmark suite: a quick table of median wall times.
Usage: python bench/bench_cpp_dev.py [--threads 1 2] [--shapes small|all] [--dtype float32]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from cases import CELL_KINDS, GATES
from fastrnn import _core
from fastrnn.backends import cpp

SHAPES = [  # cell, B, I, H, T
    ("LSTM", 1, 1, 32, 200), ("LSTM", 1, 64, 128, 100), ("LSTM", 16, 64, 128, 100),
    ("LSTM", 64, 128, 256, 50), ("LSTM", 32, 512, 512, 50), ("LSTM", 64, 1024, 1024, 25),
    ("GRU", 1, 1, 32, 200), ("GRU", 1, 64, 128, 100), ("GRU", 16, 64, 128, 100),
    ("GRU", 64, 128, 256, 50), ("GRU", 32, 512, 512, 50), ("GRU", 64, 1024, 1024, 25),
]


CLOCK = time.perf_counter


def median_time(fn, min_time=0.3, max_reps=200):
    """Median time of fn(); CLOCK is wall time, or process CPU time with --cpu-time
    (steadier on a shared, oversubscribed machine; meaningful for 1 thread only)."""
    fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def bench(cell, B, I, H, T, dtype, threads, torch):
    kind = CELL_KINDS[cell]
    rng = np.random.default_rng(0)
    g = GATES[cell]
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = np.zeros((B, H), dtype)
    c0 = np.zeros((B, H), dtype) if cell == "LSTM" else None
    w_ih = rng.uniform(-k, k, (g * H, I)).astype(dtype)
    w_hh = rng.uniform(-k, k, (g * H, H)).astype(dtype)
    b_ih = rng.uniform(-k, k, g * H).astype(dtype)
    b_hh = rng.uniform(-k, k, g * H).astype(dtype)
    go = np.ones((T, B, H), dtype)
    gh = np.zeros((B, H), dtype)
    gc = np.zeros((B, H), dtype) if cell == "LSTM" else None

    def f_infer():
        cpp.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, False)

    def f_train():
        ws = cpp.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, True)[3]
        cpp.layer_backward(ws, go, gh, gc)

    res = {"fr_infer": median_time(f_infer), "fr_train": median_time(f_train)}
    if torch is not None:
        tdt = torch.float32 if dtype == np.float32 else torch.float64
        mod = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[cell](I, H).to(tdt)
        xt = torch.from_numpy(x)

        def t_infer():
            with torch.no_grad():
                mod(xt)

        xg = xt.clone().requires_grad_(True)

        def t_train():
            out, _ = mod(xg)
            out.sum().backward()

        res["pt_infer"] = median_time(t_infer)
        res["pt_train"] = median_time(t_train)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shapes", default="all")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cells", nargs="+", default=["LSTM", "GRU"])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--cpu-time", action="store_true")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    torch = None
    if not args.no_torch:
        import torch as _t
        torch = _t
    dtype = np.dtype(args.dtype).type
    shapes = [s for s in SHAPES if s[0] in args.cells]
    if args.shapes == "small":
        shapes = [s for s in shapes if s[3] <= 128]
    print(f"simd={_core.simd_path()} blas={_core.blas_info()} dtype={args.dtype}")
    print(f"{'shape':28s} thr  cpp-inf  pt-inf  x     cpp-trn  pt-trn   x   (ms)")
    for n in args.threads:
        _core.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        for cell, B, I, H, T in shapes:
            r = bench(cell, B, I, H, T, dtype, n, torch)
            name = f"{cell} B={B} I={I} H={H} T={T}"
            line = f"{name:28s} {n:3d} {r['fr_infer']*1e3:8.3f}"
            if torch is not None:
                line += f" {r['pt_infer']*1e3:7.3f} {r['pt_infer']/r['fr_infer']:5.2f}"
            line += f" {r['fr_train']*1e3:8.3f}"
            if torch is not None:
                line += f" {r['pt_train']*1e3:7.3f} {r['pt_train']/r['fr_train']:5.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
