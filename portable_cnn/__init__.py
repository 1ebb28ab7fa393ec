"""portable-cnn: the convolutional network of chapter 10 of *Grokking Deep Learning*, written once on
the Python array API standard so the same trainer runs on NumPy, CuPy, PyTorch or array-api-strict."""

__version__ = "0.1.0"

from .backends import Backend, get_backend  # noqa: E402
from .datasets import Mnist, load_mnist  # noqa: E402
from .errors import UserError  # noqa: E402
from .model import ConvNet  # noqa: E402
from .config import Config  # noqa: E402
from .metrics import EpochRecord  # noqa: E402
from .trainer import TrainResult, train  # noqa: E402

__all__ = [
    "Backend",
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
