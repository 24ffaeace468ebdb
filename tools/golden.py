"""Bitwise golden results: record every backend's outputs and gradients over a
grid of cases, or check that the current build reproduces a recorded file
exactly (not within a tolerance: bit for bit).

A refactor that must not change results runs ``--write`` on the code before
the change and ``--check`` on the code after it, on the same machine::

    python tools/golden.py --write /tmp/golden            # before
    python tools/golden.py --check /tmp/golden            # after

Each ISA path of the compiled kernels (``FASTRNN_SIMD``) and each thread
count runs in its own subprocess; the file set is one ``.npz`` per
(ISA, threads) pair. The files are large and machine-specific, so only this
script is committed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

ISAS = ("avx512", "avx2", "generic")
THREADS = (1, 2)


def _arrays(rng, dtype, *shapes):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _contract_cases(out, backend_name):
    """One layer, one direction and one step through the backend contract."""
    from fastrnn.backends import get_backend
    from fastrnn.backends.contract import GATES as gates
    from fastrnn.backends.contract import KINDS, has_cell_state

    be = get_backend(backend_name)
    shapes = [(7, 3, 5, 6), (13, 16, 33, 51), (5, 1, 64, 128), (3, 37, 129, 70)]
    for kind, dtype, (T, B, I, H), reverse, varlen, bias in itertools.product(
            KINDS, (np.float32, np.float64), shapes, (False, True), (False, True), (True, False)):
        tag = f"{backend_name}/layer/{kind}/{np.dtype(dtype).name}/{T}x{B}x{I}x{H}/r{int(reverse)}/v{int(varlen)}/b{int(bias)}"
        rng = np.random.default_rng(zlib.crc32(tag.encode()))
        G = gates[kind]
        x, h0, w_ih, w_hh = _arrays(rng, dtype, (T, B, I), (B, H), (G * H, I), (G * H, H))
        w_ih *= 0.3
        w_hh *= 0.3
        c0 = rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None
        b_ih, b_hh = (_arrays(rng, dtype, (G * H,), (G * H,)) if bias else (None, None))
        lengths = rng.integers(1, T + 1, size=B).astype(np.int64) if varlen else None
        o, hn, cn, ws = be.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, True)
        o2, hn2, cn2, _ = be.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, False)
        go, gh = _arrays(rng, dtype, (T, B, H), (B, H))
        gc = rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None
        g = be.layer_backward(ws, go, gh, gc)
        out[tag + "/out"] = o
        out[tag + "/h_n"] = hn
        out[tag + "/out_infer"] = o2
        out[tag + "/h_n_infer"] = hn2
        if cn is not None:
            out[tag + "/c_n"] = cn
            out[tag + "/c_n_infer"] = cn2
        for k, v in g.items():
            if v is not None:
                out[tag + "/d_" + k] = v
    for kind, dtype, (B, I, H), bias in itertools.product(
            KINDS, (np.float32, np.float64), [(1, 64, 128), (3, 5, 7), (16, 33, 51)], (True, False)):
        tag = f"{backend_name}/cell/{kind}/{np.dtype(dtype).name}/{B}x{I}x{H}/b{int(bias)}"
        rng = np.random.default_rng(zlib.crc32(tag.encode()))
        G = gates[kind]
        x, h, w_ih, w_hh = _arrays(rng, dtype, (B, I), (B, H), (G * H, I), (G * H, H))
        c = rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None
        b_ih, b_hh = (_arrays(rng, dtype, (G * H,), (G * H,)) if bias else (None, None))
        hn, cn, ws = be.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, True)
        hn2, cn2, _ = be.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, False)
        gh = rng.standard_normal((B, H)).astype(dtype)
        gc = rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None
        g = be.cell_backward(ws, gh, gc)
        out[tag + "/h"] = hn
        out[tag + "/h_infer"] = hn2
        if cn is not None:
            out[tag + "/c"] = cn
            out[tag + "/c_infer"] = cn2
        for k, v in g.items():
            if v is not None:
                out[tag + "/d_" + k] = v


def _store(out, tag, results, grads):
    """The named results (None skipped) and every gradient of a case under ``tag``."""
    for k, v in results.items():
        if v is not None:
            out[f"{tag}/{k}"] = v
    for k, v in grads.items():
        if v is not None:
            out[f"{tag}/d_{k}"] = v


def _variant_cases(out, backend_name):
    """The variants through the contract: recurrent-dropout masks (every kind), the LSTM kinds'
    peepholes and projection, in layers and cells. A variant the code under test does not take
    (an older build) is left out, so its keys show as new in a check of a newer build."""
    from fastrnn.backends import get_backend
    from fastrnn.backends.contract import GATES as gates
    from fastrnn.backends.contract import KINDS, has_cell_state

    be = get_backend(backend_name)
    for kind, dtype, (T, B, I, H), reverse in itertools.product(
            KINDS, (np.float32, np.float64), [(7, 3, 5, 6), (9, 2, 4, 130), (30, 40, 7, 20)], (False, True)):
        lstm = has_cell_state(kind)
        for variant in (("hmask",), ("peep",), ("peep", "hmask", "w_hr")) if lstm else (("hmask",),):
            tag = f"{backend_name}/variant/{kind}/{np.dtype(dtype).name}/{T}x{B}x{I}x{H}/r{int(reverse)}/{'+'.join(variant)}"
            rng = np.random.default_rng(zlib.crc32(tag.encode()))
            G, P = gates[kind], (H // 2 if "w_hr" in variant else H)
            x, h0, w_ih, w_hh, b_ih, b_hh = _arrays(rng, dtype, (T, B, I), (B, P), (G * H, I), (G * H, P), (G * H,),
                                                    (G * H,))
            w_ih *= 0.3
            w_hh *= 0.3
            c0 = rng.standard_normal((B, H)).astype(dtype) if lstm else None
            lengths = rng.integers(1, T + 1, size=B).astype(np.int64)
            kw = {}
            if "peep" in variant:
                kw["peep"] = (rng.standard_normal(3 * H) * 0.3).astype(dtype)
            if "hmask" in variant:
                kw["hmask"] = ((rng.random((B, P)) >= 0.3) / 0.7).astype(dtype)
            if "w_hr" in variant:
                kw["w_hr"] = (rng.standard_normal((P, H)) * 0.3).astype(dtype)
            o, hn, cn, ws = be.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, True, **kw)
            o2 = be.layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, False, **kw)[0]
            go, gh = _arrays(rng, dtype, (T, B, P), (B, P))
            gc = rng.standard_normal((B, H)).astype(dtype) if lstm else None
            _store(out, tag, dict(out=o, h_n=hn, c_n=cn, out_infer=o2), be.layer_backward(ws, go, gh, gc))
    for kind, dtype, (B, I, H) in itertools.product(
            KINDS, (np.float32, np.float64), [(1, 64, 128), (3, 5, 7), (16, 33, 51)]):
        lstm = has_cell_state(kind)
        for variant in (("peep",), ("hmask",), ("peep", "hmask")) if lstm else (("hmask",),):
            tag = f"{backend_name}/cell-variant/{kind}/{np.dtype(dtype).name}/{B}x{I}x{H}/{'+'.join(variant)}"
            rng = np.random.default_rng(zlib.crc32(tag.encode()))
            G = gates[kind]
            x, h, w_ih, w_hh, b_ih, b_hh = _arrays(rng, dtype, (B, I), (B, H), (G * H, I), (G * H, H), (G * H,),
                                                   (G * H,))
            c = rng.standard_normal((B, H)).astype(dtype) if lstm else None
            kw = {}
            if "peep" in variant:
                kw["peep"] = (rng.standard_normal(3 * H) * 0.3).astype(dtype)
            if "hmask" in variant:
                kw["hmask"] = ((rng.random((B, H)) >= 0.3) / 0.7).astype(dtype)
            try:
                hn, cn, ws = be.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, True, **kw)
            except TypeError:  # a build whose cells take no hmask
                continue
            hn2 = be.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, False, **kw)[0]
            gh = rng.standard_normal((B, H)).astype(dtype)
            gc = rng.standard_normal((B, H)).astype(dtype) if lstm else None
            _store(out, tag, dict(h=hn, c=cn, h_infer=hn2), be.cell_backward(ws, gh, gc))


def _layer_cases(out, backend_name):
    """Whole layers through the public API: layers x directions, batch_first, lengths."""
    import fastrnn

    configs = [
        ("LSTM", {}), ("GRU", {}), ("GRU", {"linear_before_reset": False}),
        ("RNN", {"nonlinearity": "tanh"}), ("RNN", {"nonlinearity": "relu"}),
    ]
    for (cls, kw), dtype, bidir, batch_first, varlen in itertools.product(
            configs, ("float32", "float64"), (False, True), (False, True), (False, True)):
        tag = f"{backend_name}/api/{cls}{kw}/{dtype}/bi{int(bidir)}/bf{int(batch_first)}/v{int(varlen)}"
        layer = getattr(fastrnn, cls)(9, 23, num_layers=2, bidirectional=bidir, batch_first=batch_first,
                                      dtype=dtype, backend=backend_name, seed=3, **kw)
        rng = np.random.default_rng(zlib.crc32(tag.encode()))
        T, B = 11, 6
        x = rng.standard_normal((B, T, 9) if batch_first else (T, B, 9)).astype(dtype)
        lengths = [11, 3, 7, 1, 11, 5] if varlen else None
        res, state = layer(x, lengths=lengths)
        go = rng.standard_normal(res.shape).astype(dtype)
        dx, dstate = layer.backward(go)
        out[tag + "/out"] = res
        for i, s in enumerate(state if isinstance(state, tuple) else (state,)):
            out[tag + f"/state{i}"] = s
        out[tag + "/dx"] = dx
        for i, s in enumerate(dstate if isinstance(dstate, tuple) else (dstate,)):
            out[tag + f"/dstate{i}"] = s
        for k, v in sorted(layer.grads.items()):
            out[tag + "/grad_" + k] = v


def _record():
    import fastrnn

    out: dict[str, np.ndarray] = {}
    only = os.environ.get("GOLDEN_BACKENDS")
    for name in fastrnn.available_backends():
        if only and name not in only.split(","):
            continue
        _contract_cases(out, name)
        _variant_cases(out, name)
        _layer_cases(out, name)
    return out


def _child(path):
    # The source tree this script belongs to, not whatever fastrnn is installed: a script's
    # sys.path[0] is its own folder (tools/), which would leave the installed package first.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastrnn

    print(f"checking fastrnn from {Path(fastrnn.__file__).parent}", file=sys.stderr)
    np.savez(path, **_record())


def _run(isa, threads, path, backends):
    env = dict(os.environ, FASTRNN_SIMD=isa, FASTRNN_NUM_THREADS=str(threads), PYTHONHASHSEED="0",
               GOLDEN_BACKENDS=",".join(backends or []))
    subprocess.run([sys.executable, __file__, "--child", str(path)], env=env, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="DIR")
    g.add_argument("--check", metavar="DIR")
    g.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--isa", nargs="*", default=list(ISAS))
    ap.add_argument("--threads", nargs="*", type=int, default=list(THREADS))
    ap.add_argument("--backends", nargs="*", help="check only these backends (default: all available)")
    a = ap.parse_args(argv)
    if a.child:
        _child(a.child)
        return 0
    folder = Path(a.write or a.check)
    folder.mkdir(parents=True, exist_ok=True)
    bad = 0
    for isa, threads in itertools.product(a.isa, a.threads):
        name = f"golden-{isa}-t{threads}.npz"
        if a.write:
            _run(isa, threads, folder / name, None)
            print(f"wrote {folder / name}")
            continue
        fresh = folder / ("check-" + name)
        _run(isa, threads, fresh, a.backends)
        want, got = np.load(folder / name), np.load(fresh)
        names = [k for k in want.files if not a.backends or k.split("/")[0] in a.backends]
        missing = sorted(set(names) - set(got.files))
        # Cases the recorded build did not have (a new kind): reported, not compared.
        new = [k for k in got.files if k not in want.files and (not a.backends or k.split("/")[0] in a.backends)]
        differ = [k for k in names if k in got.files and
                  (want[k].shape != got[k].shape or want[k].dtype != got[k].dtype
                   or want[k].tobytes() != got[k].tobytes())]
        print(f"{name}: {len(names)} arrays, {len(differ)} differ, {len(missing)} missing, "
              f"{len(new)} new (not recorded)")
        for k in (differ + missing)[:20]:
            print("   ", k)
        bad += len(differ) + len(missing)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
