"""The compiled backend's large-block cache (csrc/include/fastrnn/memory.h).

Arrays of 1 MB and more that ``_core`` returns (outputs, training workspaces,
gradients) and the kernels' scratch buffers come from a process-wide cache, so
a training step reuses the previous step's memory instead of faulting in
fresh pages. Checked here: blocks really come back and are reused, the limit
holds (0 turns it off), reused memory never leaks stale values into results,
and NumPy's tracemalloc still sees the arrays.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

core = pytest.importorskip("fastrnn._core")
if not hasattr(core, "set_cache_limit"):
    pytest.skip("fastrnn._core was built without the block cache", allow_module_level=True)

import test_cpp_binding as tb  # noqa: E402
from _helpers import assert_close, layer_grads, random_lengths, run_layer  # noqa: E402
from conftest import DTYPES  # noqa: E402
from fastrnn.backends.contract import KINDS  # noqa: E402

from fastrnn.backends import reference as ref  # noqa: E402

MB = 1 << 20


@pytest.fixture
def cache_limit():
    limit = core.get_cache_limit()
    core.release_cache()
    yield
    core.set_cache_limit(limit)
    core.release_cache()


def _train(kind, p, lengths=None, reverse=False):
    grads = layer_grads(kind, p["x"].shape[0], p["x"].shape[1], p["h0"].shape[1], p["x"].dtype.type)
    return run_layer(tb.cpp, kind, p, lengths, reverse, True, grads)


def test_blocks_come_back_and_are_reused(cache_limit):
    core.set_cache_limit(256 * MB)
    p = tb.make("lstm", 200, 16, 8, 64, np.float64)  # out 1.6 MB, gates 6.6 MB
    assert core.cached_bytes() == 0
    first = _train("lstm", p)
    (out, _, _, _), g = first
    expected = out.copy()
    del first, out, g
    gc.collect()
    held = core.cached_bytes()
    assert held >= 200 * 16 * 64 * 8 * (1 + 4 + 1 + 1), "the workspace blocks were not given back to the cache"
    assert held <= 256 * MB
    (out2, _, _, ws), _ = _train("lstm", p)
    # the second step took its blocks from the cache (what it holds now is
    # only what it did not need), and computed the same thing
    assert core.cached_bytes() < held
    np.testing.assert_array_equal(out2, expected)


def test_limit_zero_turns_the_cache_off(cache_limit):
    core.set_cache_limit(0)
    assert core.get_cache_limit() == 0
    p = tb.make("gru", 200, 16, 8, 64, np.float32)
    r = _train("gru", p)
    del r
    gc.collect()
    assert core.cached_bytes() == 0


def test_lowering_the_limit_frees_blocks(cache_limit):
    core.set_cache_limit(256 * MB)
    p = tb.make("lstm", 200, 16, 8, 64, np.float64)
    r = _train("lstm", p)
    del r
    gc.collect()
    assert core.cached_bytes() > 2 * MB
    core.set_cache_limit(2 * MB)
    assert core.cached_bytes() <= 2 * MB
    core.release_cache()
    assert core.cached_bytes() == 0


def test_negative_limit_is_a_value_error(cache_limit):
    with pytest.raises(ValueError, match="nbytes"):
        core.set_cache_limit(-1)
    with pytest.raises(TypeError):
        core.set_cache_limit("1GB")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_reused_blocks_never_leak_stale_values(kind, dtype, reverse, cache_limit):
    """Fill every cached block with NaN, then run with lengths (padded steps,
    whose outputs are zeros and whose workspace rows are never written): the
    results still equal the reference exactly where they must."""
    core.set_cache_limit(512 * MB)
    T, B, I, H = 600, 8, 5, 64  # out and every workspace block >= 1 MB
    p = tb.make(kind, T, B, I, H, dtype)
    lengths = random_lengths(T, B)
    grads = layer_grads(kind, T, B, H, dtype)
    # Poison: take blocks of every size this call will ask for, fill, free.
    (out, h, c, ws), g = run_layer(tb.cpp, kind, p, lengths, reverse, True, grads)
    poison = [out, h, c] + [v for v in g.values() if v is not None]
    for a in poison:
        if a is not None:
            a.fill(np.nan)
    del out, h, c, ws, g, poison
    gc.collect()
    assert core.cached_bytes() > 0
    (c_out, c_h, c_c, _), c_g = run_layer(tb.cpp, kind, p, lengths, reverse, True, grads)
    (r_out, r_h, r_c, _), r_g = run_layer(ref, kind, p, lengths, reverse, True, grads)
    assert_close(c_out, r_out, "out", scaled=True)
    assert_close(c_h, r_h, "h_n", scaled=True)
    assert_close(c_c, r_c, "c_n", scaled=True)
    for k in r_g:
        assert_close(c_g[k], r_g[k], f"grad {k}", scaled=True)


def test_tracemalloc_sees_cached_arrays(cache_limit):
    p = tb.make("rnn_tanh", 400, 32, 4, 64, np.float32)  # out: 3.3 MB
    core.set_cache_limit(256 * MB)
    tracemalloc.start()
    try:
        out = tb.cpp.layer_forward("rnn_tanh", p["x"], p["h0"], None, p["w_ih"], p["w_hh"], p["b_ih"],
                                   p["b_hh"], None, False, False)[0]
        current, _ = tracemalloc.get_traced_memory()
        assert current >= out.nbytes
        del out
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        assert after < current - 400 * 32 * 64 * 4 // 2
    finally:
        tracemalloc.stop()


def test_returned_arrays_are_ordinary_writable_arrays(cache_limit):
    p = tb.make("lstm", 400, 16, 8, 64, np.float32)
    out, h_n, c_n, _ = tb.cpp.layer_forward("lstm", p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"],
                                            p["b_hh"], None, False, False)
    assert out.nbytes >= MB
    assert out.flags.c_contiguous and out.flags.writeable and out.flags.aligned
    assert out.ctypes.data % 64 == 0
    out += 1  # writable in place
    view = out[::2]
    saved = view.copy()
    del out
    gc.collect()
    # a view keeps its block alive: a call of the same shape must get another block
    again = tb.cpp.layer_forward("lstm", p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"],
                                 p["b_hh"], None, False, False)[0]
    assert again.ctypes.data != view.ctypes.data
    again.fill(np.nan)
    np.testing.assert_array_equal(view, saved)


def test_a_reused_block_is_accounted_at_its_real_size(cache_limit):
    """A cached block handed to a smaller request (up to half its size) goes back to the cache with its
    real size: what the cache reports it holds stays what it holds."""
    core.set_cache_limit(256 * MB)

    def run(T):
        p = tb.make("rnn_tanh", T, 16, 4, 64, np.float32)
        out = tb.cpp.layer_forward("rnn_tanh", p["x"], p["h0"], None, p["w_ih"], p["w_hh"], p["b_ih"],
                                   p["b_hh"], None, False, False)[0]
        del out
        gc.collect()
        return core.cached_bytes()

    held = run(1000)  # out: 4.1 MB, plus the kernel's scratch
    assert held >= 1000 * 16 * 64 * 4
    for T in (600, 700, 600):  # out: 2.5-2.9 MB, served by the 4.1 MB block
        assert run(T) == held
