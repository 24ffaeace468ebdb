"""``fastrnn bench-report`` on a synthetic pytest-benchmark JSON, and on a tiny real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastrnn.tools import bench_report

REPO = Path(__file__).resolve().parents[1]


def bench_entry(impl, median, *, cell="LSTM", mode="infer", B=16, I=64, H=128, T=100, dtype="float32",
                threads=1, case="layer", verified=True, flops=None):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell]
    fwd = 2 * T * B * G * H * (I + H)
    extra = {"case": case, "cell": cell, "mode": mode, "B": B, "I": I, "H": H, "T": T, "layers": 1,
             "dtype": dtype, "threads": threads, "impl": impl, "verified": verified,
             "flops": flops if flops is not None else fwd * (3 if mode == "train" else 1)}
    group = f"{cell}/{mode}/B{B}-I{I}-H{H}-T{T}/{dtype}/{threads}t"
    stats = {"min": median * 0.9, "max": median * 1.2, "mean": median, "median": median, "stddev": 0.0,
             "rounds": 5, "iterations": 1}
    return {"group": group, "name": f"test_rnn[{group}-{impl}]", "extra_info": extra, "stats": stats}


def synthetic():
    fwd = 2 * 100 * 16 * 4 * 128 * (64 + 128)
    benches = [
        # LSTM infer: cpp 1 ms, numpy 10 ms, torch 4 ms, ORT 2 ms, GEMM with the same FLOPs in 0.25 ms
        bench_entry("fastrnn-cpp", 1e-3),
        bench_entry("fastrnn-numpy", 10e-3),
        bench_entry("torch", 4e-3),
        bench_entry("onnxruntime", 2e-3),
        bench_entry("gemm-roofline", 0.25e-3, flops=fwd),
        # GRU train: numba the best fastrnn backend; a faster but unverified cpp must not count
        bench_entry("fastrnn-cpp", 1e-6, cell="GRU", mode="train", verified=False),
        bench_entry("fastrnn-numba", 5e-3, cell="GRU", mode="train"),
        bench_entry("torch", 20e-3, cell="GRU", mode="train"),
        bench_entry("gemm-roofline", 1e-3, cell="GRU", mode="train", flops=2 * 1600 * 192 * 384),
        # a case with the peers only
        bench_entry("torch", 3e-3, cell="RNN", threads=2),
        # not a benchmark of this suite
        {"group": None, "name": "test_other", "extra_info": {}, "stats": {"median": 1.0}},
    ]
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}}, "datetime": "2026-11-25T00:00:00",
            "benchmarks": benches}


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic()))
    return path


def test_summarize_speedups_gflops_roofline():
    cases = {(c.info["cell"], c.info["mode"]): c for c in bench_report.summarize(synthetic())}
    assert set(cases) == {("LSTM", "infer"), ("GRU", "train"), ("RNN", "infer")}
    lstm = cases["LSTM", "infer"]
    assert lstm.best == "fastrnn-cpp"
    assert lstm.speedup("torch") == pytest.approx(4.0)
    assert lstm.speedup("onnxruntime") == pytest.approx(2.0)
    fwd = 2 * 100 * 16 * 4 * 128 * (64 + 128)
    assert lstm.gflops("fastrnn-cpp") == pytest.approx(fwd / 1e-3 / 1e9)
    assert lstm.roofline_fraction == pytest.approx(0.25)
    gru = cases["GRU", "train"]
    assert gru.best == "fastrnn-numba" and gru.unverified == ["fastrnn-cpp"]
    assert gru.speedup("torch") == pytest.approx(4.0)
    assert gru.speedup("onnxruntime") is None
    rnn = cases["RNN", "infer"]
    assert rnn.best is None and rnn.speedup("torch") is None and rnn.roofline_fraction is None


def test_markdown_table(results):
    data = bench_report.load(results)
    text = bench_report.markdown(data, bench_report.summarize(data))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| case"))
    for col in ("fastrnn-cpp", "fastrnn-numba", "fastrnn-numpy", "PyTorch", "ONNX Runtime", "×PyTorch", "×ORT",
                "GFLOP/s", "% roofline"):
        assert col in header
    assert header.index("fastrnn-cpp") < header.index("fastrnn-numba") < header.index("fastrnn-numpy")
    rows = [line for line in lines if line.startswith("| LSTM") or line.startswith("| GRU")
            or line.startswith("| RNN")]
    assert len(rows) == 3
    ncols = header.count("|")
    assert all(row.count("|") == ncols for row in rows)
    lstm = next(r for r in rows if r.startswith("| LSTM"))
    assert "| 1 ms |" in lstm and "**4.00×**" in lstm and "**2.00×**" in lstm and "25 %" in lstm
    assert "fastrnn-cpp in GRU/train" in text  # the unverified result is named, not shown
    assert "Test CPU" in text


def test_cli_writes_markdown_and_png(results, tmp_path):
    out_md, out_png = tmp_path / "report.md", tmp_path / "speedups.png"
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench-report", str(results), "-o", str(out_md),
                           "--plot", str(out_png)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out_md.read_text().startswith("# fastrnn benchmark report")
    assert "![speedups](speedups.png)" in out_md.read_text()
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_to_stdout_default_plot_next_to_json(results, capsys):
    assert bench_report.main([str(results)]) == 0
    assert "| case | mode |" in capsys.readouterr().out
    assert (results.parent / "results-speedups.png").exists()


def test_bench_report_script_calls_the_cli(results, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), str(results), "--no-plot"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| case | mode |" in proc.stdout
    assert not (results.parent / "results-speedups.png").exists()


def test_not_a_benchmark_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench-report", str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a pytest-benchmark JSON" in proc.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(SystemExit) as exc:
        bench_report.main([str(empty)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_tiny_real_run(tmp_path):
    """A real pytest-benchmark run of one small case through the suite, then the report."""
    pytest.importorskip("pytest_benchmark")
    out = tmp_path / "real.json"
    # the child is a pytest run of its own: pytest-benchmark turns itself off where it sees
    # an xdist worker's variables, which it inherits when this suite runs under `-n`
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["FASTRNN_BENCH"] = "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "-k",
         "LSTMCell-infer and 1t and (numpy or gemm or torch)", "--benchmark-max-time=0.01",
         "--benchmark-min-rounds=2", f"--benchmark-json={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = bench_report.load(out)
    impls = {b["extra_info"]["impl"] for b in data["benchmarks"]}
    assert {"fastrnn-numpy", "gemm-roofline"} <= impls
    for b in data["benchmarks"]:
        assert b["extra_info"]["verified"] is True
        assert b["group"] == "LSTMCell/infer/B1-I64-H128-step/float32/1t"
    [case] = bench_report.summarize(data)
    assert case.best == "fastrnn-numpy" and case.roofline_fraction is not None
    assert "fastrnn" in data["machine_info"]  # fastrnn info stored with the results
    assert bench_report.main([str(out), "-o", str(tmp_path / "real.md")]) == 0
    assert (tmp_path / "real-speedups.png").exists() == ("torch" in impls)


def test_load_average_and_roofline_warning_in_the_text():
    data = synthetic()
    text = bench_report.markdown(data, bench_report.summarize(data))
    assert "load average" not in text and "Above 100 % of the roofline" not in text
    data["machine_info"].update(loadavg_start=[0.5, 0.25, 0.1], loadavg_end=[1.5, 0.75, 0.2])
    fwd = 2 * 100 * 16 * 4 * 128 * (64 + 128)
    data["benchmarks"].append(bench_entry("gemm-roofline", 2e-3, threads=2, flops=fwd))  # roofline slower ...
    data["benchmarks"].append(bench_entry("fastrnn-cpp", 1e-3, threads=2))  # ... than the layer: noise
    text = bench_report.markdown(data, bench_report.summarize(data))
    assert "load average (1/5/15 min) at start 0.5/0.25/0.1, at end 1.5/0.75/0.2" in text
    assert "Above 100 % of the roofline in 1 cases" in text
    assert "| 200 % |" in text


def test_peak_memory_entries_get_their_own_table(tmp_path):
    """Entries of bench/test_bench_memory.py (measure=peak_bytes) are not timings: they fill the memory
    table, with PyTorch's peak over fastrnn-cpp's."""
    data = synthetic()
    mem = []
    for impl, peak in (("fastrnn-cpp", 100 * 2**20), ("fastrnn-numba", 150 * 2**20), ("torch", 140 * 2**20)):
        e = bench_entry(impl, 2.0, mode="train")
        e["extra_info"].update(measure="peak_bytes", peak_bytes=peak, verified=False)
        e["group"] = "memory " + e["group"]
        mem.append(e)
    data["benchmarks"] += mem
    cases = bench_report.summarize(data)
    assert all(c.info["mode"] != "train" or c.info["cell"] != "LSTM" for c in cases)  # no timing row from them
    rows = bench_report.peak_memory(data)
    assert len(rows) == 1 and rows[0][1] == {"fastrnn-cpp": 100 * 2**20, "fastrnn-numba": 150 * 2**20,
                                             "torch": 140 * 2**20}
    md = bench_report.markdown(data, cases)
    table = md[md.index("## Peak memory"):]
    assert "| LSTM | B=16 I=64 H=128 T=100 | float32 | 100.0 MiB | 150.0 MiB | 140.0 MiB | **1.40×** |" in table
    # a file with only memory probes is still a report
    path = tmp_path / "mem.json"
    data["benchmarks"] = mem
    path.write_text(json.dumps(data))
    out = tmp_path / "mem.md"
    assert bench_report.main([str(path), "--no-plot", "-o", str(out)]) == 0
    assert "Peak memory" in out.read_text()


def test_threads_option_keeps_one_thread_count(results, tmp_path):
    out = tmp_path / "one.md"
    assert bench_report.main([str(results), "--no-plot", "--threads", "2", "-o", str(out)]) == 0
    md = out.read_text()
    assert "| RNN | infer |" in md and "| LSTM | infer |" not in md  # only the 2-thread case
    with pytest.raises(SystemExit) as exc:
        bench_report.main([str(results), "--no-plot", "--threads", "7"])
    assert exc.value.code == 2


def test_variant_entries_get_their_own_table(tmp_path):
    """Entries of bench/test_bench_variants.py (extra_info['variant']) fill the variants table: the
    variant's cost over fastrnn's plain layer (unverified by design) and each peer over the variant;
    a peer whose answer was not checked is left out and named."""
    def entry(impl, median, verified=True):
        extra = dict(variant="lstm_peep", mode="infer", B=16, I=64, H=128, T=100, dtype="float32", threads=1,
                     impl=impl, verified=verified)
        return {"group": "lstm_peep-infer", "name": f"test_lstm_peephole[{impl}]", "extra_info": extra,
                "stats": {"median": median}}

    data = synthetic()
    data["benchmarks"] += [entry("fastrnn-peep", 2e-3), entry("fastrnn-plain", 1.6e-3, verified=False),
                           entry("onnxruntime-peep", 3e-3), entry("torch-loop-peep", 1.0, verified=False)]
    other = entry("fastrnn-rdrop", 5e-3)  # another variant's group: its own row and cost
    other["extra_info"]["variant"] = "lstm_rdrop"
    plain = entry("fastrnn-plain", 4e-3, verified=False)
    plain["extra_info"]["variant"] = "lstm_rdrop"
    data["benchmarks"] = [other, plain] + data["benchmarks"]
    cases = bench_report.summarize(data)
    assert not any(c.info.get("cell") is None for c in cases)  # no grid row from them
    md = bench_report.markdown(data, cases)
    table = md[md.index("## Variants"):]
    assert ("| fastrnn-peep | fastrnn-plain | onnxruntime-peep | fastrnn-rdrop | cost | × onnxruntime-peep |"
            in table)
    assert "| lstm_peep | infer | B=16 I=64 H=128 T=100 | float32 | 1 | 2 ms | 1.6 ms | 3 ms | – | 1.25× | **1.50×** |" \
        in table
    assert "| lstm_rdrop | infer | B=16 I=64 H=128 T=100 | float32 | 1 | – | 4 ms | – | 5 ms | 1.25× | – |" in table
    assert "torch-loop-peep (lstm_peep)" in table
    path = tmp_path / "variants.json"
    data["benchmarks"] = data["benchmarks"][-4:]
    path.write_text(json.dumps(data))
    out = tmp_path / "variants.md"
    assert bench_report.main([str(path), "--no-plot", "-o", str(out)]) == 0
    text = out.read_text()
    assert "## Variants" in text and "| case | mode |" not in text
