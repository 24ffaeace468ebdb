"""The backend contract (``fastrnn/backends/contract.py``) against every place that restates it.

* The kinds and gate counts: the C ABI's ``enum fastrnn_kind`` and
  ``fastrnn_num_gates``, and the tables of the ``_core`` binding, accept
  exactly :data:`contract.KINDS` with :data:`contract.GATES`.
* Each available backend module conforms to :class:`contract.Backend`, with
  the protocol's parameter names, order and defaults.
"""

from __future__ import annotations

import importlib
import inspect
import re

import numpy as np
import pytest

from fastrnn import backends
from fastrnn.backends import contract
from fastrnn.backends.contract import GATES, KINDS

# --------------------------------------------------------------------------- the kinds


def test_kind_table_is_consistent():
    assert KINDS == ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig")
    assert GATES == {k: len(contract.SPECS[k].gate_names) for k in KINDS}
    assert [k for k in KINDS if contract.has_cell_state(k)] == ["lstm"]
    for bad in ("LSTM", "lstmx", None, 3):
        with pytest.raises(ValueError, match="kind must be one of"):
            contract.num_gates(bad)


def test_c_abi_kind_enum_is_the_contracts():
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    enum = capi.ffi.typeof("enum fastrnn_kind").relements  # name -> value, as the header declares them
    assert {name.removeprefix("FASTRNN_").lower(): code for name, code in enum.items()} == \
        {kind: i for i, kind in enumerate(KINDS)}
    assert capi.KIND_CODES == {kind: i for i, kind in enumerate(KINDS)}
    for kind, code in capi.KIND_CODES.items():
        assert capi.lib.fastrnn_num_gates(code) == GATES[kind], kind
    for code in (-1, len(KINDS), len(KINDS) + 1):
        assert capi.lib.fastrnn_num_gates(code) == -1


def _core_or_skip():
    core = pytest.importorskip("fastrnn._core", reason="the compiled extension is not installed")
    if not hasattr(core, "layer_forward"):
        pytest.skip("fastrnn._core was built without the recurrent kernels")
    return core


def _binding_args(kind, G, cell):
    B, I, H = 2, 3, 4
    x = np.zeros((B, I) if cell else (2, B, I))
    c = np.zeros((B, H)) if contract.has_cell_state(kind) else None
    return [kind, x, np.zeros((B, H)), c, np.zeros((G * H, I)), np.zeros((G * H, H)), None, None]


@pytest.mark.parametrize("cell", [False, True], ids=["layer", "cell"])
def test_core_binding_accepts_exactly_the_contracts_kinds(cell):
    core = _core_or_skip()
    call = (lambda *a: core.cell_forward(*a, False)) if cell else (lambda *a: core.layer_forward(*a, None, False, False))
    for kind in KINDS:
        call(*_binding_args(kind, GATES[kind], cell))  # accepted with the contract's gate count
        for G in (GATES[kind] - 1, GATES[kind] + 1):
            if G >= 1:
                with pytest.raises(ValueError, match="w_ih"):
                    call(*_binding_args(kind, G, cell))
    with pytest.raises(ValueError, match="kind must be one of") as err:
        call(*_binding_args("not_a_kind", 1, cell))
    listed = re.findall(r"'(\w+)'", str(err.value).split("got")[0])
    assert tuple(listed) == KINDS


# --------------------------------------------------------------------------- the Backend protocol

PROTOCOL_FUNCTIONS = ("layer_forward", "layer_backward", "cell_forward", "cell_backward")


def _params(sig):
    """(name, kind, has default, default) of each parameter, without the protocol's ``self``."""
    return [(p.name, p.kind, p.default is not p.empty, None if p.default is p.empty else p.default)
            for p in sig.parameters.values() if p.name != "self"]


def _signature(func):
    """The signature of a Python function, or of a pybind11 function from the first line of its
    docstring (pybind11 writes ``name(arg: type, arg: type = default) -> ret`` there)."""
    try:
        return inspect.signature(func)
    except ValueError:
        head = func.__doc__.splitlines()[0]
        args = head[head.index("(") + 1: head.rindex(") ->")]
        names = []
        for part in re.split(r",\s*(?![^\[]*\])", args) if args else []:
            name, _, rest = part.partition(":")
            default = rest.partition("=")[2].strip()
            names.append(f"{name.strip()}={default}" if default else name.strip())
        scope: dict = {}
        exec(f"def f({', '.join(names)}): pass", scope)  # noqa: S102 - the binding's own parameter list
        return inspect.signature(scope["f"])


@pytest.mark.parametrize("name", backends.PREFERENCE)
def test_backend_module_conforms_to_the_protocol(name):
    if name not in backends.available_backends():
        pytest.skip(f"backend {name} is not available: {backends.unavailable_backends().get(name)}")
    mod = importlib.import_module(backends._MODULES[name])
    assert isinstance(mod, contract.Backend)
    assert mod.NAME == name
    assert mod.KINDS == KINDS
    for fn in PROTOCOL_FUNCTIONS:
        assert _params(_signature(getattr(mod, fn))) == _params(inspect.signature(getattr(contract.Backend, fn))), fn
    if hasattr(mod, "set_num_threads"):
        assert isinstance(mod, contract.ThreadedBackend)
        assert _params(_signature(mod.set_num_threads)) == \
            _params(inspect.signature(contract.ThreadedBackend.set_num_threads))


def test_signature_check_can_fail():
    """The conformance check above sees a renamed parameter, a lost default and a missing function."""
    ref = importlib.import_module("fastrnn.backends.reference")
    want = _params(inspect.signature(contract.Backend.layer_backward))

    def renamed(ws, grad_out, grad_h, grad_c_n, acc=None):
        pass

    def no_default(ws, grad_out, grad_h_n, grad_c_n, acc):
        pass

    assert _params(_signature(ref.layer_backward)) == want
    assert _params(_signature(renamed)) != want
    assert _params(_signature(no_default)) != want
    assert not isinstance(object(), contract.Backend)
