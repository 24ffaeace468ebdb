# fastrnn.train is the module fastrnn.training.train (fastrnn/__init__.py registers it under this name)
from .training.train import *
