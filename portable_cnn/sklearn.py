"""A scikit-learn estimator over the package's trainer: :class:`ConvNetClassifier`.

Its parameters are :class:`~portable_cnn.config.Config`'s fields, read from Config (one declaration, the
same defaults), less the few that fit's arguments replace (:data:`NOT_PARAMETERS`); ``random_state`` is
the seed and ``warm_start`` continues the fitted run. ``scikit-learn`` is the ``sklearn`` extra.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from .backends import default_eval_batch, get_backend
from .callbacks import KeepRun
from .config import Config
from .datasets import Mnist
from .errors import UserError
from .evaluation import probabilities
from .model import IMAGE_SIDE, NUM_CLASSES
from .runs import train

PIXELS = IMAGE_SIDE * IMAGE_SIDE
# Config's fields that are no estimator parameter, and what stands for each.
NOT_PARAMETERS = {
    "train_size": "fit's X: every image given is trained on",
    "test_size": "fit's X: each epoch's accuracy is measured on the training images",
    "data_dir": "fit's X and y are the data",
    "seed": "random_state",
    "resume": "warm_start, which continues the fitted run",
}
# warm_start may not change these: they shape the fitted network or its random stream.
FIXED_WHEN_WARM = ("book", "kernels", "kernel_size", "dtype", "rng")
PARAMETERS = {
    **{field.name: field.default for field in dataclasses.fields(Config) if field.name not in NOT_PARAMETERS},
    "random_state": Config.seed,
    "warm_start": False,
}

# The checks of sklearn's check_estimator that cannot apply to a classifier of 28x28 images: each fits it on
# data of 1 to 10 features, which it refuses (784 are needed). Every other check passes (tests/test_sklearn.py).
_FEATURES = "features; the network reads 28x28 images (784 features)"
EXPECTED_FAILED_CHECKS = {
    "check_fit_score_takes_y": f"fits on 3 {_FEATURES}",
    "check_estimators_overwrite_params": f"fits on 2 {_FEATURES}",
    "check_dont_overwrite_parameters": f"fits on 3 {_FEATURES}",
    "check_estimators_fit_returns_self": f"fits on 2 {_FEATURES}",
    "check_readonly_memmap_input": f"fits on 2 {_FEATURES}",
    "check_n_features_in_after_fitting": f"fits on 4 {_FEATURES}",
    "check_estimators_dtypes": f"fits on 5 {_FEATURES}",
    "check_dtype_object": f"fits on 10 {_FEATURES}",
    "check_pipeline_consistency": f"fits on 3 {_FEATURES}",
    "check_estimators_nan_inf": f"fits on 3 {_FEATURES} (before it puts NaN in them)",
    "check_estimators_pickle": f"fits on 3 {_FEATURES}",
    "check_f_contiguous_array_estimator": f"fits on 3 {_FEATURES}",
    "check_classifier_data_not_an_array": f"fits on 2 {_FEATURES}",
    "check_classifiers_one_label": f"fits on 3 {_FEATURES}",
    "check_classifiers_classes": f"fits on 2 {_FEATURES}",
    "check_classifiers_train": f"fits on 2 {_FEATURES}",
    "check_supervised_y_2d": f"fits on 3 {_FEATURES}",
    "check_methods_sample_order_invariance": f"fits on 3 {_FEATURES}",
    "check_methods_subset_invariance": f"fits on 3 {_FEATURES}",
    "check_fit2d_1sample": f"fits on 10 {_FEATURES} (one image of 784 pixels trains)",
    "check_dict_unchanged": f"fits on 3 {_FEATURES}",
    "check_fit_idempotent": f"fits on 2 {_FEATURES}",
    "check_fit_check_is_fitted": f"fits on 2 {_FEATURES}",
    "check_n_features_in": f"fits on 2 {_FEATURES}",
    "check_fit2d_predict1d": f"fits on 3 {_FEATURES}",
}


class ConvNetClassifier(ClassifierMixin, BaseEstimator):
    """The chapter-10 network as a scikit-learn classifier of 28x28 images.

    ``X`` is ``(n, 784)`` or ``(n, 28, 28)``, pixels 0-255 (integers, or floats above 1) or 0-1 (floats);
    ``y`` any labels, at most 10 classes (``classes_``). Every :class:`Config` knob is a keyword parameter
    with Config's default (``epochs=300`` ...), ``random_state`` is the seed (an int, or None / a
    RandomState to draw one), and with ``warm_start=True`` each further ``fit`` trains ``epochs`` more
    epochs from the fitted parameters and random stream. Fitted: ``classes_``, ``n_features_in_`` (784),
    ``run_`` (the run as a checkpoint record: ``checkpoint.save(path, clf.run_)`` writes a file that
    ``portable-cnn evaluate`` and ``export`` read), ``history_`` (one EpochRecord per epoch, its accuracies
    measured on ``X``) and ``n_iter_``. Like ``train``, it prints the notebook's line each epoch unless ``quiet``.
    """

    def __init__(self, **params):
        unknown = set(params) - set(PARAMETERS)
        if unknown:
            raise TypeError(f"ConvNetClassifier got unexpected parameters: {', '.join(sorted(unknown))}")
        for name, default in PARAMETERS.items():
            setattr(self, name, params.get(name, default))

    __init__.__signature__ = inspect.Signature(  # what get_params/set_params and clone read
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in PARAMETERS.items()]
    )

    def fit(self, X, y):
        """Train on images ``X`` with labels ``y``; with ``warm_start`` and a fitted run, ``epochs`` more epochs."""
        warm = self.warm_start and hasattr(self, "run_")
        X, y = validate_data(self, _flat(X), y, reset=not warm)
        check_classification_targets(y)
        _check_features(X)
        classes, targets = np.unique(y, return_inverse=True)
        if len(classes) > NUM_CLASSES:
            raise ValueError(
                f"the network has {NUM_CLASSES} outputs, so y may hold at most 10 classes, not {len(classes)}"
            )
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError("warm_start continues the fitted network: y must have its classes_; set warm_start=False")
        pixels = _pixels(X).reshape(-1, IMAGE_SIDE, IMAGE_SIDE) * 255  # the trainer reads 0-255 images, as MNIST
        data = Mnist(pixels, targets, pixels, targets, source="the arrays given to fit")
        keep = KeepRun()
        try:
            config = self._config(len(X), self.run_.epoch + self.epochs if warm else self.epochs).validated()
            resume_from = self._continued(config) if warm else None
            history = train(config, data, callbacks=(keep,), resume_from=resume_from).history
        except UserError as error:
            raise ValueError(str(error)) from None
        self.classes_, self.run_, self.history_, self.n_iter_ = classes, keep.run, history, len(history)
        return self

    def predict_proba(self, X):
        """Class probabilities ``(n, len(classes_))`` (no dropout), in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, _flat(X), reset=False)
        _check_features(X)
        backend = get_backend(self.backend, self.device)
        with backend.activated():
            model = self.run_.to_model(backend)
            batch = self.eval_batch_size or default_eval_batch(self.backend, self.device)
            found = probabilities(model, _pixels(X).astype(self.run_.dtype), batch)[:, : len(self.classes_)]
        return found / found.sum(axis=1, keepdims=True)  # the outputs of classes y never had take no share

    def predict(self, X):
        """The most probable class of each image, one of ``classes_``."""
        found = self.predict_proba(X)
        return self.classes_[np.argmax(found, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # pixels
        return tags

    def _config(self, count: int, epochs: int) -> Config:
        knobs = {name: getattr(self, name) for name in PARAMETERS if name not in ("random_state", "warm_start")}
        seed = self.random_state
        if not isinstance(seed, (int, np.integer)):
            seed = check_random_state(seed).randint(2**31)
        return Config(**{**knobs, "epochs": epochs, "seed": int(seed), "train_size": count, "test_size": count})

    def _continued(self, config: Config):
        """The fitted run, to continue under ``config`` (validated): its network and random stream must stay."""
        for name in FIXED_WHEN_WARM:
            fitted = self.run_.config.get(name)
            if fitted != getattr(config, name):
                raise ValueError(
                    f"warm_start continues the fitted network, which has {name}={fitted!r}, not "
                    f"{getattr(config, name)!r}; set warm_start=False to start again"
                )
        return dataclasses.replace(self.run_, recipe=config.recipe())


def _flat(X):
    """``(n, 28, 28)`` images as ``(n, 784)`` rows; anything else as given (validate_data judges it)."""
    if len(getattr(X, "shape", ())) == 3 or isinstance(X, (list, tuple)) and np.ndim(X) == 3:
        X = np.asarray(X)
        if X.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(f"images must be 28x28 pixels: X is (n, 28, 28) or (n, 784), not {X.shape}")
        return X.reshape(len(X), PIXELS)
    return X


def _check_features(X) -> None:
    """784 non-negative features: ``(n, 28, 28)`` images flattened by :func:`_flat`, or rows of 784 pixels."""
    check_non_negative(X, "ConvNetClassifier (pixels are 0-255 or 0-1)")
    if X.shape[1] != PIXELS:
        raise ValueError(
            f"ConvNetClassifier reads 28x28 images: X has {X.shape[1]} feature(s), it needs {PIXELS} "
            f"(or the shape (n, 28, 28))"
        )


def _pixels(X) -> np.ndarray:
    """Pixels scaled to [0, 1]: integers and floats above 1 are read as 0-255, other floats as 0-1."""
    high = float(X.max()) if X.size else 0.0
    if high > 255:
        raise ValueError(f"pixels must be 0-255 or 0-1; X holds values up to {high:g}")
    scale = 255 if np.issubdtype(X.dtype, np.integer) or high > 1 else 1
    return np.asarray(X, dtype=np.float64) / scale
