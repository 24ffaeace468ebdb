"""Training utilities on top of the layers: the sine-wave exercise and what it is built from.

- :mod:`fastrnn.training.nn`: ``Linear``, ``SequenceModel`` (a recurrent stack with a linear
  head) and ``mse_loss``;
- :mod:`fastrnn.training.optim`: ``SGD``, ``Adam``, ``LBFGS`` and gradient clipping;
- :mod:`fastrnn.training.train`: ``fit``, ``evaluate`` and ``forecast``;
- :mod:`fastrnn.training.data`: the sine-wave data sets;
- :mod:`fastrnn.training.sine_cli`: the ``fastrnn sine`` command.

The public import paths are ``fastrnn.nn``, ``fastrnn.optim``, ``fastrnn.train`` and
``fastrnn.data``: each is the same module object as the one here.
"""
