# fastrnn.optim is the module fastrnn.training.optim (fastrnn/__init__.py registers it under this name)
from .training.optim import *
