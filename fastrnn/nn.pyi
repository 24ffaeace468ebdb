# fastrnn.nn is the module fastrnn.training.nn (fastrnn/__init__.py registers it under this name)
from .training.nn import *
