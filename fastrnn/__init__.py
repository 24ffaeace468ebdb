"""fastrnn: fast fused recurrent layers (RNN, LSTM, GRU) for CPUs.

NumPy-native and drop-in compatible with PyTorch's layers::

    import numpy as np, fastrnn
    lstm = fastrnn.LSTM(8, 32, num_layers=2, seed=0)
    out, (h_n, c_n) = lstm(np.zeros((100, 4, 8), np.float32))
    dx, (dh0, dc0) = lstm.backward(np.ones_like(out))
"""

from __future__ import annotations

import sys as _sys

__version__ = "0.1.0"

from ._grad_mode import is_grad_enabled, no_grad
from .backends import available_backends, get_backend, get_num_threads, set_backend, set_num_threads
from .module import Module
from .rnn import GRU, LSTM, RNN, GradientError, GRUCell, LSTMCell, RNNCell
# The sine-wave training utilities live in fastrnn/training/. Their public names fastrnn.data,
# fastrnn.nn, fastrnn.optim and fastrnn.train are the same module objects, registered here so that
# `import fastrnn.nn`, `from fastrnn.nn import ...` and pickles naming fastrnn.nn find them; the stubs
# fastrnn/{data,nn,optim,train}.pyi give type checkers the same names.
from .training import data, nn, optim, train

_sys.modules.update({f"{__name__}.{m.__name__.rsplit('.', 1)[1]}": m for m in (data, nn, optim, train)})
from .training.nn import Linear, SequenceModel, mse_loss

__all__ = [
    "__version__",
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "Module",
    "Linear",
    "SequenceModel",
    "mse_loss",
    "data",
    "nn",
    "optim",
    "train",
    "GradientError",
    "no_grad",
    "is_grad_enabled",
    "available_backends",
    "get_backend",
    "set_backend",
    "set_num_threads",
    "get_num_threads",
]
