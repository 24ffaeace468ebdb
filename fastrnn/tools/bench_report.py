"""``fastrnn bench-report``: a markdown table and a speedup plot from a benchmark run.

Reads the JSON that ``pytest bench --benchmark-json=results.json`` writes (see
bench/README.md). Per case (one pytest-benchmark group): the median time of
every implementation, the best fastrnn backend's speedup over PyTorch and over
ONNX Runtime, its GFLOP/s (forward = 2*steps*G*H*(I+H) per layer, G = 4 LSTM,
3 GRU, 1 RNN; train = 3 x forward) and its fraction of the same run's GEMM
roofline (NumPy matmul with the FLOPs of one forward layer, same dtype and
threads). Only results whose answer was checked against the reference
(``extra_info["verified"]``) count. The variants' benchmarks
(bench/test_bench_variants.py, ``extra_info["variant"]``) get a table of their own.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require

FASTRNN_PREFIX = "fastrnn-"
TORCH, ORT, GEMM = "torch", "onnxruntime", "gemm-roofline"
KIND_ORDER = {"layer": 0, "cell": 1, "varlen": 2, "seed": 3}
#: extra_info fields that identify a case (everything but the implementation).
CASE_FIELDS = ("case", "cell", "mode", "B", "I", "H", "T", "layers", "dtype", "threads")
#: ... and a variant's case.
VARIANT_FIELDS = ("variant", "mode", "B", "I", "H", "P", "T", "dtype", "threads")  # P: a projection's
#: The variants' baseline: fastrnn's plain layer of the same shape (bench/test_bench_variants.py).
PLAIN = "fastrnn-plain"
LABELS = {TORCH: "PyTorch", ORT: "ONNX Runtime", GEMM: "GEMM"}


@dataclass
class CaseResult:
    """One case: its fields and the median seconds of every verified implementation."""

    group: str
    info: dict[str, Any]
    times: dict[str, float] = field(default_factory=dict)  # impl -> median seconds
    flops: dict[str, float | None] = field(default_factory=dict)  # impl -> FLOPs of one call
    unverified: list[str] = field(default_factory=list)

    @property
    def best(self) -> str | None:
        """The fastest fastrnn backend of this case."""
        ours = {k: t for k, t in self.times.items() if k.startswith(FASTRNN_PREFIX)}
        return min(ours, key=ours.__getitem__) if ours else None

    def speedup(self, peer: str) -> float | None:
        best = self.best
        if best is None or peer not in self.times:
            return None
        return self.times[peer] / self.times[best]

    def gflops(self, impl: str | None) -> float | None:
        flops = None if impl is None else self.flops.get(impl)
        if impl is None or impl not in self.times or not flops:
            return None
        return flops / self.times[impl] / 1e9

    @property
    def roofline_fraction(self) -> float | None:
        ours, roof = self.gflops(self.best), self.gflops(GEMM)
        return None if ours is None or not roof else ours / roof

    @property
    def shape(self) -> str:
        i = self.info
        s = f"B={i.get('B')} I={i.get('I')} H={i.get('H')}"
        if i.get("case") == "cell":
            return s + " (1 step)"
        s += f" T={i.get('T')}"
        if (i.get("layers") or 1) != 1:
            s = f"L={i['layers']} " + s
        if i.get("case") in ("varlen", "seed"):
            s += f" ({i['case']})"
        return s

    def sort_key(self) -> tuple[int, str, str, str, int, int, int, int]:
        i = self.info
        n = {k: i.get(k) or 0 for k in ("B", "I", "H", "T", "threads")}
        return (KIND_ORDER.get(str(i.get("case")), 9), str(i.get("cell")), str(i.get("mode")), str(i.get("dtype")),
                n["B"] * n["H"] * n["T"], n["B"], n["I"], n["threads"])


def load(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks')")
    return data


def summarize(data: dict[str, Any]) -> list[CaseResult]:
    """One :class:`CaseResult` per group of the fastrnn suite, in table order."""
    cases: dict[tuple[Any, ...], CaseResult] = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        impl = extra.get("impl")
        if not impl or extra.get("measure") == "peak_bytes" or extra.get("variant"):
            continue  # not a timing of this grid (see peak_memory, variants)
        key = tuple(extra.get(k) for k in CASE_FIELDS)
        case = cases.get(key)
        if case is None:
            info = {k: extra.get(k) for k in CASE_FIELDS}
            group = bench.get("group") or "/".join(str(extra.get(k)) for k in CASE_FIELDS)
            case = cases[key] = CaseResult(group, info)
        if not extra.get("verified"):
            case.unverified.append(impl)
            continue
        case.times[impl] = float(bench["stats"]["median"])
        case.flops[impl] = extra.get("flops")
    return sorted(cases.values(), key=CaseResult.sort_key)


def peak_memory(data: dict[str, Any]) -> list[tuple[CaseResult, dict[str, int]]]:
    """The memory probes of bench/test_bench_memory.py: per case, impl -> peak bytes of a training step."""
    cases: dict[tuple[Any, ...], tuple[CaseResult, dict[str, int]]] = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        if extra.get("measure") != "peak_bytes" or extra.get("peak_bytes") is None:
            continue
        key = tuple(extra.get(k) for k in CASE_FIELDS)
        if key not in cases:
            cases[key] = (CaseResult(bench.get("group") or "", {k: extra.get(k) for k in CASE_FIELDS}), {})
        cases[key][1][extra["impl"]] = int(extra["peak_bytes"])
    return sorted(cases.values(), key=lambda cp: cp[0].sort_key())


def variants(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, float], list[str]]]:
    """The variants' benchmarks: per case (its VARIANT_FIELDS), impl -> median seconds of the
    verified results (the plain baseline computes something else and counts unverified), and the
    implementations left out because their answer was not checked."""
    rows: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, float], list[str]]] = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        if not extra.get("variant") or not extra.get("impl"):
            continue
        key = tuple(extra.get(k) for k in VARIANT_FIELDS)
        info, times, unverified = rows.setdefault(key, ({k: extra.get(k) for k in VARIANT_FIELDS}, {}, []))
        if extra.get("verified") or extra["impl"] == PLAIN:
            times[extra["impl"]] = float(bench["stats"]["median"])
        else:
            unverified.append(extra["impl"])
    return sorted(rows.values(), key=lambda r: tuple(str(r[0].get(k)) for k in ("variant", "mode", "dtype"))
                  + tuple(int(r[0].get(k) or 0) for k in ("threads", "B", "I", "H", "P", "T")))


def variants_markdown(rows: list[tuple[dict[str, Any], dict[str, float], list[str]]]) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(impl for _, times, _ in rows for impl in times))
    mine = [c for c in cols if c.startswith(FASTRNN_PREFIX) and c != PLAIN]
    peers = [c for c in cols if not c.startswith(FASTRNN_PREFIX)]
    out = ["## Variants", "",
           "Median wall time per call (bench/test_bench_variants.py). *cost* = the variant's time / fastrnn's plain "
           "layer of the same shape; × peer = the peer's time / the variant's (bold when fastrnn is faster).", ""]
    head = ["variant", "mode", "shape", "dtype", "thr"] + cols + ["cost"] + [f"× {p}" for p in peers]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 5 + ["--:"] * (len(head) - 5)) + "|")
    for info, times, _ in rows:
        t = next((times[c] for c in mine if c in times), None)  # the row's variant (one per group)
        shape = " ".join(f"{k}={info.get(k)}" for k in ("B", "I", "H", "P", "T") if info.get(k) is not None)
        row = [str(info.get("variant")), str(info.get("mode")), shape, str(info.get("dtype")), str(info.get("threads"))]
        row += [fmt_time(times.get(c)) for c in cols]
        plain = times.get(PLAIN)
        row.append(f"{t / plain:.2f}×" if t and plain else "–")
        row += [fmt_ratio(times[p] / t if t and times.get(p) else None) for p in peers]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    bad = [(info.get("variant"), impl) for info, _, unverified in rows for impl in unverified]
    if bad:
        out += ["Not shown (the answer was not checked, or the check failed): "
                + ", ".join(f"{impl} ({v})" for v, impl in bad), ""]
    return out


def memory_markdown(rows: list[tuple[CaseResult, dict[str, int]]]) -> list[str]:
    if not rows:
        return []
    cols = column_order({impl for _, peaks in rows for impl in peaks})
    out = ["## Peak memory of a training step", "",
           "Peak resident memory during one warm forward + backward minus the resident memory before it, "
           "each implementation in a fresh process with allocator caches emptied first (bench/memprobe.py). "
           "Ratio: PyTorch's peak / fastrnn-cpp's (bold when fastrnn needs less).", ""]
    head = ["case", "shape", "dtype"] + [LABELS.get(i, i) for i in cols] + ["PyTorch / cpp"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
    for case, peaks in rows:
        cpp, torch = peaks.get(FASTRNN_PREFIX + "cpp"), peaks.get(TORCH)
        ratio = torch / cpp if cpp and torch else None
        row = [str(case.info.get("cell")), case.shape, str(case.info.get("dtype"))]
        row += ["–" if peaks.get(i) is None else f"{peaks[i] / 2**20:.1f} MiB" for i in cols]
        row.append(fmt_ratio(ratio))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out


def column_order(seen: Iterable[str]) -> list[str]:
    """Column order of implementations: fastrnn backends (cpp, numba, numpy, others), PyTorch, ONNX Runtime."""
    seen = set(seen)
    ours = sorted((i for i in seen if i.startswith(FASTRNN_PREFIX)),
                  key=lambda i: ({"cpp": 0, "numba": 1, "numpy": 2}.get(i[len(FASTRNN_PREFIX):], 3), i))
    return ours + [i for i in (TORCH, ORT) if i in seen]


def implementations(cases: Iterable[CaseResult]) -> list[str]:
    """The timed implementations of ``cases``, in :func:`column_order`."""
    return column_order({impl for c in cases for impl in c.times})


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            break
    value = seconds / scale
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def fmt_ratio(x: float | None, suffix: str = "×") -> str:
    if x is None:
        return "–"
    return f"**{x:.2f}{suffix}**" if x >= 1 else f"{x:.2f}{suffix}"


def fmt_num(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def geomean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in kept) / len(kept)) if kept else None


def markdown(data: dict[str, Any], cases: list[CaseResult], plot_path: str | Path | None = None) -> str:
    impls = implementations(cases)
    out = ["# fastrnn benchmark report", ""]
    machine = data.get("machine_info") or {}
    fr = machine.get("fastrnn") or {}
    cpu = (machine.get("cpu") or {}).get("brand_raw", "")
    facts = [f"run {data.get('datetime', '?')}"]
    if cpu:
        facts.append(f"CPU {cpu} ({(machine.get('cpu') or {}).get('count', '?')} logical cores)")
    if fr:
        facts.append(f"fastrnn {fr.get('fastrnn')}, backends {', '.join(fr.get('backends', {}).get('available', []))}")
        pk = fr.get("packages", {})
        facts.append(", ".join(f"{k} {pk[k]}" for k in ("numpy", "torch", "onnxruntime", "numba") if pk.get(k)))
    load = [machine.get("loadavg_start"), machine.get("loadavg_end")]
    if any(load):
        facts.append("load average (1/5/15 min) at start " + " / ".join(
            "?" if x is None else "/".join(f"{v:g}" for v in x) for x in load).replace(" / ", ", at end ", 1))
    out += [" · ".join(facts), ""]
    out += [
        "Median wall time per call. *best* = fastest fastrnn backend; ×PyTorch / ×ORT = its speedup "
        "(peer time / best time; bold when fastrnn is faster). GFLOP/s: forward 2·steps·G·H·(I+H) per layer, "
        "train 3× forward. Roofline: the same run's NumPy GEMM with one forward layer's FLOPs "
        "([steps, I+H] × [I+H, G·H]), same dtype and threads. Only answers checked against the float64 "
        "reference are shown; – = not run (not applicable, skipped or unavailable).",
        "",
    ]
    if cases:  # the grid (bench/test_bench_rnn.py)
        head = ["case", "mode", "shape", "dtype", "thr"] + [LABELS.get(i, i) for i in impls]
        head += ["best", "×PyTorch", "×ORT", "GFLOP/s", "roofline GFLOP/s", "% roofline"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 5 + ["--:"] * (len(head) - 5)) + "|")
        for c in cases:
            i = c.info
            best = c.best
            frac = c.roofline_fraction
            row = [str(i.get("cell")), str(i.get("mode")), c.shape, str(i.get("dtype")), str(i.get("threads"))]
            row += [fmt_time(c.times.get(impl)) for impl in impls]
            row += [best[len(FASTRNN_PREFIX):] if best else "–", fmt_ratio(c.speedup(TORCH)), fmt_ratio(c.speedup(ORT)),
                    fmt_num(c.gflops(best)), fmt_num(c.gflops(GEMM)), "–" if frac is None else f"{100 * frac:.0f} %"]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        vs_torch = [c.speedup(TORCH) for c in cases]
        vs_ort = [c.speedup(ORT) for c in cases]
        summary = []
        for label, values in (("PyTorch", vs_torch), ("ONNX Runtime", vs_ort)):
            present = [v for v in values if v is not None]
            if present:
                summary.append(f"over {label}: geometric mean {geomean(present):.2f}× over {len(present)} cases, "
                               f"faster in {sum(v > 1 for v in present)}")
        if summary:
            out += ["Best fastrnn backend " + "; ".join(summary) + ".", ""]
        over = [c.group for c in cases if (c.roofline_fraction or 0) > 1]
        if over:
            out += [f"Above 100 % of the roofline in {len(over)} cases: the GEMM and the layer were timed at different "
                    "moments and one of them was disturbed (other load on the machine; 2-thread runs suffer most). "
                    "Trust those rows less, or rerun them on an idle machine.", ""]
        bad = [(c.group, impl) for c in cases for impl in c.unverified]
        if bad:
            out += ["Not shown (no extra_info['verified']: the answer was not checked, or the check failed): "
                    + ", ".join(f"{impl} in {g}" for g, impl in bad), ""]
    out += variants_markdown(variants(data))
    out += memory_markdown(peak_memory(data))
    if plot_path:
        out += [f"![speedups]({plot_path})", ""]
    return "\n".join(out)


def plot(cases: Sequence[CaseResult], path: str | Path) -> bool:
    """Horizontal bars of the best fastrnn backend's speedup over each peer (log scale). False if none."""
    rows = [c for c in cases if c.speedup(TORCH) is not None or c.speedup(ORT) is not None]
    if not rows:
        return False
    matplotlib = require("matplotlib", extra="bench", feature="fastrnn bench-report's plot (or pass --no-plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.28 * n))
    y = list(range(n))
    h = 0.4
    for k, (peer, color) in enumerate(((TORCH, "tab:orange"), (ORT, "tab:blue"))):
        vals = [c.speedup(peer) for c in rows]
        ys = [yy + (k - 0.5) * h for yy, v in zip(y, vals) if v is not None]
        xs = [v for v in vals if v is not None]
        if xs:
            ax.barh(ys, xs, height=h, color=color, label=f"over {LABELS[peer]}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels([c.group for c in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of the best fastrnn backend (peer time / fastrnn time; > 1 = fastrnn faster)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    src = Path(args.results)
    data = load(src)
    if args.threads is not None:
        data = dict(data, benchmarks=[b for b in data["benchmarks"]
                                      if (b.get("extra_info") or {}).get("threads") == args.threads])
    cases = summarize(data)
    if not cases and not peak_memory(data) and not variants(data):
        only = f" with threads={args.threads}" if args.threads is not None else ""
        raise ValueError(f"{src}: no benchmarks of the fastrnn suite (extra_info['impl']){only} in it")
    plot_path = None
    if not args.no_plot:
        plot_path = Path(args.plot) if args.plot else src.with_name(src.stem + "-speedups.png")
        if not plot(cases, plot_path):
            plot_path = None
    if args.output and args.output != "-":
        out = Path(args.output)
        rel = None
        if plot_path is not None:
            try:
                rel = plot_path.resolve().relative_to(out.resolve().parent)
            except ValueError:
                rel = plot_path.resolve()
        out.write_text(markdown(data, cases, rel), encoding="utf-8")
        n_var = len(variants(data))
        print(f"wrote {out} ({len(cases)} cases" + (f", {n_var} variant cases" if n_var else "") + ")"
              + (f" and {plot_path}" if plot_path else ""))
    else:
        print(markdown(data, cases, plot_path))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench-report", help="markdown table + speedup plot from a `pytest bench --benchmark-json` file",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    _arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="pytest-benchmark JSON (pytest bench --benchmark-json=results.json)")
    parser.add_argument("-o", "--output", help="markdown file to write (default: print to stdout)")
    parser.add_argument("--plot", help="PNG of the speedups (default: <results>-speedups.png next to the JSON)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="only the cases run with N threads (default: all)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/report.py ARGS``: the same as ``fastrnn bench-report ARGS``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fastrnn bench-report", description=__doc__.split("\n\n")[1])
    _arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"fastrnn bench-report: error: {exc}\n")
