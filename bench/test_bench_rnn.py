"""Benchmarks: every fastrnn backend, PyTorch and ONNX Runtime on the same case,
side by side in one pytest-benchmark group, each result checked against the
float64 reference; plus the NumPy GEMM roofline of the case in the same group.

Run from the repository root: ``pytest bench --bench-quick`` (see bench/README.md).
"""

from __future__ import annotations

import pytest

import impls
from cases import build_cases, check, reference_result, case_data, max_rel_error, RTOL

CASES = {case.id: case for case in build_cases()}
IMPLS = {impl.name: impl for impl in impls.implementations()}


def _params():
    # Parametrized by names (JSON-serializable in the benchmark's "params").
    params = []
    for case in CASES.values():
        marks = [pytest.mark.bench_quick] if case.quick else []
        for impl in IMPLS.values():
            if impl.applies(case) is None:
                params.append(pytest.param(case.id, impl.name, id=f"{case.id}-{impl.name}", marks=marks))
    return params


def _record(benchmark, case, impl_name, **more):
    """Group and extra_info: set before the timed call (the group is read when the stats are made)."""
    benchmark.group = case.group
    benchmark.extra_info.update(case.extra_info())
    benchmark.extra_info["impl"] = impl_name
    benchmark.extra_info.update(more)


@pytest.mark.parametrize(("case", "impl"), _params())
def test_rnn(benchmark, case, impl):
    case, impl = CASES[case], IMPLS[impl]
    reason = impl.unavailable(case)
    if reason:
        pytest.skip(reason)
    ref_name, ref = reference_result(case)
    data = case_data(case)
    _record(benchmark, case, impl.name, reference=ref_name, verified=False)
    with impl.threads(case.threads):
        fn, collect = impl.prepare(case, data)
        check(case, collect(fn()), ref, ref_name)  # untimed: warm-up (JIT, caches) and the first check
        raw = benchmark(fn)
    err = check(case, collect(raw), ref, ref_name)  # the last timed call's answer
    benchmark.extra_info.update(max_rel_err=err, verified=True)


@pytest.mark.parametrize(
    "case", [pytest.param(c.id, id=f"{c.id}-gemm", marks=[pytest.mark.bench_quick] if c.quick else [])
             for c in CASES.values()]
)
def test_gemm_roofline(benchmark, case):
    """NumPy matmul [steps, I+H] x [I+H, G*H]: the FLOPs of one forward layer as one GEMM."""
    case = CASES[case]
    impl = impls.GemmImpl()
    M, K, N = case.gemm_shape()
    _record(benchmark, case, impl.name, flops=2 * M * K * N, gemm_m=M, gemm_k=K, gemm_n=N, verified=False)
    with impl.threads(case.threads):
        fn, collect = impl.prepare(case, None)
        raw = benchmark(fn)
    err, _ = max_rel_error(collect(raw), fn.reference())
    assert err <= RTOL[case.dtype] * 10, f"GEMM differs from float64 by {err}"
    benchmark.extra_info.update(max_rel_err=err, verified=True)
