# fastrnn.data is the module fastrnn.training.data (fastrnn/__init__.py registers it under this name)
from .training.data import *
