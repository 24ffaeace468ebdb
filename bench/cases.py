"""The benchmark grid: shapes, data, FLOP counts and the reference results.

A :class:`Case` is one cell of the grid (cell x mode x shape x dtype x threads).
Every implementation of a case runs on the same input and the same weights
(:func:`case_data`, seeded from the shape alone, so float32 and float64 and both
thread counts share them) and is checked against :func:`reference_result`,
computed once per shape in float64 (PyTorch if installed, else fastrnn's NumPy
reference backend).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from fastrnn.backends.contract import GATES as _KIND_GATES

#: The benchmark's cell names (PyTorch's layer classes) and the kind each runs.
CELL_KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_tanh"}
#: cell name -> G, its number of gates.
GATES = {cell: _KIND_GATES[kind] for cell, kind in CELL_KINDS.items()}

#: Relative tolerance of a result against the float64 reference, as
#: max|result - ref| <= RTOL * max|ref| per array (a fast wrong answer fails).
RTOL = {"float32": 1e-4, "float64": 1e-9}
#: ... times this for long sequences (T >= 500, i.e. the seed workload): its weight
#: gradients are float32 sums over T*B = 97k rows, where PyTorch itself is ~9e-5 off.
LONG_SEQUENCE_FACTOR = 3

#: The anchor shapes (B, I, H, T) at which the project states its speed goals.
ANCHOR_SHAPES = [
    (1, 1, 32, 200),
    (1, 64, 128, 100),
    (16, 64, 128, 100),
    (64, 128, 256, 50),
    (32, 512, 512, 50),
    (64, 1024, 1024, 25),
]
#: float64 runs on this subset of shapes (LSTM and GRU).
FLOAT64_SHAPES = [(16, 64, 128, 100), (32, 512, 512, 50)]
THREADS = (1, 2)


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    kind: "layer" (one-layer sequence), "cell" (one step of LSTMCell/GRUCell/RNNCell),
    "varlen" (a padded batch with per-sequence lengths), "seed" (the seed workload:
    stacked layers + linear head + MSE, one training step).
    """

    kind: str
    cell: str
    mode: str
    B: int
    I: int  # noqa: E741 - the usual name of the input size
    H: int
    T: int
    layers: int = 1
    dtype: str = "float32"
    threads: int = 1
    quick: bool = False

    @property
    def G(self) -> int:
        return GATES[self.cell]

    @property
    def shape(self) -> str:
        s = f"B{self.B}-I{self.I}-H{self.H}"
        if self.kind == "cell":
            return s + "-step"
        s += f"-T{self.T}"
        if self.layers != 1:
            s = f"L{self.layers}-" + s
        if self.kind == "varlen":
            s += "-varlen"
        if self.kind == "seed":
            s = "seed-" + s
        return s

    @property
    def cell_name(self) -> str:
        return self.cell + ("Cell" if self.kind == "cell" else "")

    @property
    def group(self) -> str:
        """pytest-benchmark group: cell/mode/shape/dtype/threads."""
        return f"{self.cell_name}/{self.mode}/{self.shape}/{self.dtype}/{self.threads}t"

    @property
    def id(self) -> str:
        return self.group.replace("/", "-")

    @property
    def data_key(self) -> tuple:
        """What the data and the reference depend on (not dtype, not threads)."""
        return (self.kind, self.cell, self.mode, self.B, self.I, self.H, self.T, self.layers)

    def steps(self) -> int:
        """Sequence steps actually computed: T*B, or the sum of lengths for varlen."""
        if self.kind == "varlen":
            return int(case_lengths(self.B, self.T).sum())
        if self.kind == "cell":
            return self.B
        return self.T * self.B

    def flops(self) -> int:
        """Forward = sum over layers of 2*steps*G*H*(I_l + H); train = 3 x forward.

        The seed workload's linear head and loss are not counted (they are < 1 %).
        """
        fwd = 0
        for layer in range(self.layers):
            in_size = self.I if layer == 0 else self.H
            fwd += 2 * self.steps() * self.G * self.H * (in_size + self.H)
        return fwd * (3 if self.mode == "train" else 1)

    def gemm_shape(self) -> tuple[int, int, int]:
        """(M, K, N) of the roofline GEMM: [steps, I+H] x [I+H, G*H].

        This is the input projection with the recurrent product folded in, i.e.
        one GEMM with exactly the FLOPs of one forward layer; it is not
        degenerate where I is tiny (I = 1). For stacked layers the widest layer.
        """
        k = max(self.I, self.H if self.layers > 1 else 0) + self.H
        return self.steps(), k, self.G * self.H

    def extra_info(self) -> dict:
        return {
            "case": self.kind,
            "cell": self.cell_name,
            "mode": self.mode,
            "B": self.B,
            "I": self.I,
            "H": self.H,
            "T": self.T,
            "layers": self.layers,
            "dtype": self.dtype,
            "threads": self.threads,
            "flops": self.flops(),
        }


def build_cases() -> list[Case]:
    """The full grid; ``quick=True`` marks the smoke-test subset."""
    cases = []
    quick_layer = {(16, 64, 128, 100), (1, 1, 32, 200)}
    for threads in THREADS:
        for cell in ("LSTM", "GRU", "RNN"):
            for mode in ("infer", "train"):
                for B, I, H, T in ANCHOR_SHAPES:
                    quick = (B, I, H, T) == (16, 64, 128, 100) or (
                        (B, I, H, T) in quick_layer and cell != "RNN" and threads == 1
                    )
                    cases.append(Case("layer", cell, mode, B, I, H, T, threads=threads, quick=quick))
        for cell in ("LSTM", "GRU"):
            for mode in ("infer", "train"):
                for B, I, H, T in FLOAT64_SHAPES:
                    quick = (B, I, H, T) == (16, 64, 128, 100) and mode == "train" and threads == 2
                    cases.append(Case("layer", cell, mode, B, I, H, T, dtype="float64", threads=threads, quick=quick))
        for cell in ("LSTM", "GRU", "RNN"):
            for mode in ("infer", "train"):
                quick = cell != "RNN" and mode == "infer" and threads == 1
                cases.append(Case("cell", cell, mode, 1, 64, 128, 1, threads=threads, quick=quick))
        for cell in ("LSTM", "GRU"):
            for mode in ("infer", "train"):
                quick = threads == 1 and (cell, mode) in {("LSTM", "train"), ("GRU", "infer")}
                cases.append(Case("varlen", cell, mode, 16, 64, 128, 100, threads=threads, quick=quick))
        for cell in ("LSTM", "GRU"):
            for dtype in ("float32", "float64"):  # float64: the main job's precision
                quick = cell == "LSTM" and threads == 1 and dtype == "float32"
                cases.append(Case("seed", cell, "train", 97, 1, 51, 999, layers=2, dtype=dtype, threads=threads,
                                  quick=quick))
    return cases


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def _rng(key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def case_lengths(B: int, T: int) -> np.ndarray:
    """Lengths spread evenly over [T/2, T], shuffled (unsorted, as users have them)."""
    lengths = np.linspace(T // 2, T, B).round().astype(np.int64)
    lengths[np.argmax(lengths)] = T
    return _rng(("lengths", B, T)).permutation(lengths)


def param_names(case: Case) -> list[str]:
    if case.kind == "cell":
        return ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    names = []
    for layer in range(case.layers):
        names += [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]
    return names


@functools.lru_cache(maxsize=8)
def _data64(data_key) -> dict:
    kind, cell, mode, B, I, H, T, layers = data_key
    rng = _rng(data_key)
    G = GATES[cell]
    bound = 1.0 / np.sqrt(H)
    case = Case(kind, cell, mode, B, I, H, T, layers)
    params = {}
    for name in param_names(case):
        layer_in = I if (name.endswith("_l0") or kind == "cell" or "_ih" not in name) else H
        shape = {"weight_ih": (G * H, layer_in), "weight_hh": (G * H, H)}.get(name.rsplit("_l", 1)[0], (G * H,))
        params[name] = rng.uniform(-bound, bound, size=shape)
    data = {"params": params}
    if kind == "cell":
        data["x"] = rng.uniform(-1, 1, size=(B, I))
        data["h0"] = rng.uniform(-0.5, 0.5, size=(B, H))
        data["c0"] = rng.uniform(-0.5, 0.5, size=(B, H)) if cell == "LSTM" else None
    elif kind == "seed":
        # PyTorch's time-sequence-prediction example: sine waves with random phase,
        # predict the next sample. Time-major [T, B, 1].
        shift = rng.integers(-4 * 20, 4 * 20, size=B)
        t = np.arange(T + 1)[:, None] + shift[None, :]
        wave = np.sin(t / 20.0)
        data["x"] = wave[:-1, :, None]
        data["target"] = wave[1:, :, None]
        data["head_weight"] = rng.uniform(-bound, bound, size=(1, H))
        data["head_bias"] = rng.uniform(-bound, bound, size=(1,))
    else:
        data["x"] = rng.uniform(-1, 1, size=(T, B, I))
    data["lengths"] = case_lengths(B, T) if kind == "varlen" else None
    return data


def case_data(case: Case) -> dict:
    """Inputs and weights of ``case`` in its dtype (fresh copies, C-contiguous)."""
    d64 = _data64(case.data_key)
    dt = np.dtype(case.dtype)

    def cast(v):
        if v is None:
            return None
        if isinstance(v, dict):
            return {k: cast(a) for k, a in v.items()}
        if v.dtype.kind == "f":
            return np.ascontiguousarray(v, dtype=dt).copy()
        return v.copy()

    return {k: cast(v) for k, v in d64.items()}


# ----------------------------------------------------------------------------
# Reference results and the check
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _reference(data_key) -> tuple[str, dict]:
    case = Case(*data_key, dtype="float64")
    import impls  # noqa: PLC0415 - bench/ is on sys.path under pytest

    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        impl = impls.FastrnnImpl("numpy")
    else:
        impl = impls.TorchImpl()
    fn, collect = impl.prepare(case, case_data(case))
    return f"{impl.name}-float64", collect(fn())


def reference_result(case: Case) -> tuple[str, dict]:
    """(name of the reference, {array name: float64 array}) for the case's shape."""
    return _reference(case.data_key)


def max_rel_error(result: dict, ref: dict) -> tuple[float, str]:
    """Largest max|a - b| / max|b| over the arrays ``result`` shares with ``ref``."""
    common = [k for k in result if k in ref and result[k] is not None and ref[k] is not None]
    if not common:
        raise AssertionError(f"no result to check: got {sorted(result)}, reference has {sorted(ref)}")
    worst, where = 0.0, common[0]
    for k in common:
        a, b = np.asarray(result[k], dtype=np.float64), np.asarray(ref[k], dtype=np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"{k}: shape {a.shape} != reference shape {b.shape}")
        if not np.all(np.isfinite(a)):
            return float("inf"), k
        err = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)
        if err > worst:
            worst, where = err, k
    return worst, where


def tolerance(case: Case) -> float:
    """The relative tolerance of ``case`` against the float64 reference."""
    return RTOL[case.dtype] * (LONG_SEQUENCE_FACTOR if case.T >= 500 else 1)


def check(case: Case, result: dict, ref: dict, ref_name: str) -> float:
    """Assert ``result`` matches the reference; return the worst relative error."""
    err, where = max_rel_error(result, ref)
    tol = tolerance(case)
    assert err <= tol, f"{case.group}: {where} differs from {ref_name} by {err:.3g} (relative to max), tolerance {tol}"
    return err
