"""zoo: train, run and compare talking-head generation methods under one data pipeline and metric suite."""
from zoo.errors import ZooError

__version__ = "0.1.0"

__all__ = ["ZooError", "__version__"]
