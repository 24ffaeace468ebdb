"""Does a fastrnn call slow down when it follows PyTorch ops? A/B probe (not a pytest benchmark).

One train step (forward + backward of ``out.sum()``) of a fastrnn.torch LSTM,
B=16 I=64 H=128 T=100 float32, timed in several situations, interleaved in
rounds in ONE process so that a loaded machine hits all of them alike:

- ``alone``: fastrnn steps back to back;
- ``after-torch``: each fastrnn step right after a torch.nn.LSTM train step of the same shape;
- ``after-torch+sleep``: the same with a pause between them (PyTorch's OpenMP workers
  stop spinning and go to sleep; the caches stay as PyTorch left them);
- ``after-torch-1thread``: the PyTorch step runs with torch.set_num_threads(1) (no
  OpenMP workers wake up; the caches are evicted as before);
- ``after-matmul``: after a multi-threaded torch matmul sized to touch as much memory as
  the LSTM step (OpenMP workers spin, little else);
- ``numpy-api-alone`` / ``numpy-api-after-torch``: the same step through fastrnn's NumPy
  API (``fastrnn.LSTM``, no torch operator inside the step), back to back / each right
  after a torch.nn.LSTM step: the situation of the issue (6.4 vs 9.1 ms measured there).

Run it with different OpenMP settings to see what PyTorch's workers cost, e.g.::

    python bench/torch_threads.py
    GOMP_SPINCOUNT=0 python bench/torch_threads.py
    GOMP_SPINCOUNT=10000 python bench/torch_threads.py
    OMP_WAIT_POLICY=passive python bench/torch_threads.py

It prints, per situation, the median over rounds of each round's median step time
(ms) and the spread (min - max of the round medians), and the CPU time PyTorch's
OpenMP worker threads burned DURING the fastrnn step (median, from
/proc/self/task/*/schedstat: busy-waiting workers show up here whatever the load
of the machine, where wall times on a shared machine do not). ``--rounds``/``--steps`` to
change the effort; ``--threads`` the thread count of both libraries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

import fastrnn.torch as ft


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sleep-ms", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    before_omp = _tids()
    torch.mm(torch.randn(256, 256), torch.randn(256, 256))  # starts PyTorch's OpenMP workers
    omp_workers = _tids() - before_omp
    torch.manual_seed(0)
    B, I, H, T = 16, 64, 128, 100
    peer = nn.LSTM(I, H)
    ours = ft.LSTM(I, H)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)

    def fastrnn_step():
        out, _ = ours(x)
        out.sum().backward()

    import fastrnn

    np_layer = fastrnn.LSTM(I, H)
    np_layer.load_state_dict({k: v.detach().numpy() for k, v in peer.state_dict().items()})
    xn = x.detach().numpy()
    ones = np.ones((T, B, H), np.float32)

    def numpy_api_step():
        np_layer(xn)
        np_layer.backward(ones)

    def torch_step():
        out, _ = peer(x)
        out.sum().backward()

    def torch_step_1thread():
        torch.set_num_threads(1)
        try:
            torch_step()
        finally:
            torch.set_num_threads(args.threads)

    def matmul():
        for _ in range(4):
            torch.mm(a, b)

    def pause():
        time.sleep(args.sleep_ms / 1000)

    situations = {
        "alone": (),
        "after-torch": (torch_step,),
        "after-torch+sleep": (torch_step, pause),
        "after-torch-1thread": (torch_step_1thread,),
        "after-matmul": (matmul,),
        "numpy-api-alone": (),
        "numpy-api-after-torch": (torch_step,),
    }
    for _ in range(3):  # warm up both libraries
        fastrnn_step()
        torch_step()
    results = {name: [] for name in situations}
    burned = {name: [] for name in situations}
    peer_times = []
    for _ in range(args.rounds):
        for name, before in situations.items():
            times = []
            for _ in range(args.steps):
                for f in before:
                    f()
                cpu0 = _cpu_ns(omp_workers)
                t0 = time.perf_counter()
                (numpy_api_step if name.startswith("numpy-api") else fastrnn_step)()
                times.append(time.perf_counter() - t0)
                burned[name].append((_cpu_ns(omp_workers) - cpu0) / 1e6)
            results[name].append(statistics.median(times) * 1e3)
        for _ in range(args.steps):
            t0 = time.perf_counter()
            torch_step()
            peer_times.append(time.perf_counter() - t0)
    env = {k: os.environ[k] for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
           if k in os.environ}
    print(f"threads={args.threads} env={env or '{}'} rounds={args.rounds} steps/round={args.steps} "
          f"OpenMP workers={len(omp_workers)}")
    print(f"  torch.nn.LSTM step     median {statistics.median(peer_times) * 1e3:7.2f} ms   (the peer itself, "
          "for the cost of an OpenMP setting to PyTorch)")
    for name, meds in results.items():
        print(f"  {name:22s} median {statistics.median(meds):7.2f} ms   spread {min(meds):7.2f} - {max(meds):7.2f}"
              f"   OpenMP workers' CPU during it {statistics.median(burned[name]):6.2f} ms")


def _tids():
    return set(os.listdir("/proc/self/task"))


def _cpu_ns(tids):
    """Nanoseconds these threads have spent on a CPU (first field of schedstat)."""
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:  # the thread has exited
            pass
    return total


if __name__ == "__main__":
    main()
