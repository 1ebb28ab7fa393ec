"""portable-cnn: the convolutional network of chapter 10 of *Grokking Deep Learning*, written once on
the Python array API standard so the same trainer runs on NumPy, CuPy, PyTorch or array-api-strict."""

from .backends import Backend, get_backend
from .callbacks import Callback
from .config import Config
from .datasets import Mnist, load_mnist
from .errors import UserError
from .model import ConvNet
from .runs import TrainResult, train
from .trainer import EpochRecord
from .version import __version__

__all__ = [
    "Backend",
    "Callback",
    "Config",
    "ConvNet",
    "EpochRecord",
    "Mnist",
    "TrainResult",
    "UserError",
    "__version__",
    "get_backend",
    "load_mnist",
    "train",
]
