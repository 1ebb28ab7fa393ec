"""Image files -> MNIST-like digits: ``(N, 28, 28)`` float32 arrays in [0, 1], light digit on dark ground.

A picture (PNG, JPEG or anything else Pillow reads, of any size and colour) is made into a digit
the way MNIST's were made: grayscale; inverted when its background is light; the background level
subtracted; the digit's bounding box fitted into 20x20 pixels, keeping its aspect ratio, with
anti-aliasing; then placed in a 28x28 field so that its centre of mass sits at the centre. A
``.npy`` array of shape ``(28, 28)`` or ``(N, 28, 28)`` is taken as already MNIST-like (0-255
integers, or floats in [0, 1]).

Every failure is a :class:`~portable_cnn.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import pathlib

import numpy as np

from .errors import UserError, reason
from .model import IMAGE_SIDE

BOX = 20  # MNIST fits each digit's bounding box into 20x20 pixels ...
CENTRE = 14.0  # ... and puts its centre of mass here (row and column, in pixel indices; MNIST's mean is 14.0)
INK = 0.2  # pixels above this fraction of the darkest-to-lightest range count for the bounding box
PILLOW_HINT = (
    "reading pictures needs Pillow, which is not installed; install it with: pip install 'portable-cnn[images]'"
)


def read_digits(path) -> np.ndarray:
    """The digits in one file: ``(N, 28, 28)`` float32 in [0, 1] (N is 1 for a picture)."""
    return read_file(path)[0]


def read_file(path) -> tuple[np.ndarray, bool]:
    """``(digits, batch)``: the digits as :func:`read_digits` gives them, and whether the file holds a
    batch (an ``(N, 28, 28)`` array) rather than one digit. Errors name the file."""
    path = pathlib.Path(path)
    try:
        if path.is_dir():
            raise UserError("it is a folder, not an image")
        if not path.exists():
            raise UserError("no such file")
        if path.suffix.lower() == ".npy":
            return _read_array(path)
        return mnist_like(read_gray(path))[None, ...], False
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def read_gray(path) -> np.ndarray:
    """A picture as a ``(H, W)`` float64 array in [0, 1] (transparency taken as the drawing)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise UserError(PILLOW_HINT) from None
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _gray(image)
    except Image.DecompressionBombError:
        raise UserError("the picture is too large to be read safely") from None
    except OSError as error:  # includes PIL.UnidentifiedImageError and truncated files
        cause = "not a picture Pillow can read" if type(error).__name__ == "UnidentifiedImageError" else reason(error)
        raise UserError(f"cannot read it: {cause}") from None


def _gray(image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float grayscale: keep their range
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        alpha = rgba[..., 3]
        if alpha.min() < 0.99:  # a drawing on a transparent ground: put it on a ground that contrasts with its ink
            luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
            opaque = alpha > 0.5
            ink = float(luminance[opaque].mean()) if opaque.any() else 0.0
            ground = 1.0 if ink < 0.5 else 0.0
            return alpha * luminance + (1 - alpha) * ground
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def from_pixels(pixels) -> np.ndarray:
    """A drawing given as numbers (nested lists or an array, any size; 0-255, or 0-1 when no value exceeds 1)
    -> the ``(28, 28)`` digit :func:`mnist_like` makes, as for a picture file of the same pixels."""
    try:
        gray = np.asarray(pixels)
    except ValueError:  # rows of different lengths
        gray = np.asarray([], dtype=object)
    if gray.dtype.kind not in "iuf":
        raise UserError("the pixels must be numbers, in rows of equal length")
    if gray.ndim != 2 or 0 in gray.shape:
        raise UserError(f"the pixels must be a 2-D array (rows of numbers), not one of shape {list(gray.shape)}")
    gray = _pixel_values(gray)
    return mnist_like(gray / 255 if gray.max() > 1 else gray)


def _pixel_values(array: np.ndarray) -> np.ndarray:
    """A numeric array as float64, refused when a value is NaN, infinite or outside 0-255."""
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise UserError("the pixel values include NaN or infinity")
    if values.min() < 0 or values.max() > 255:
        raise UserError("pixel values must lie in [0, 255] (or [0, 1] for floats)")
    return values


def mnist_like(gray: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` grayscale picture in [0, 1] -> a ``(28, 28)`` float32 MNIST digit (see the module doc)."""
    gray = np.asarray(gray, dtype=np.float64)
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    ground = float(np.median(border))
    if ground > 0.5:  # dark digit on a light ground: MNIST digits are light on dark
        gray, ground = 1 - gray, 1 - ground
    ink = np.clip(gray - ground, 0, None)
    if ink.max() < 0.05:
        raise UserError("no digit found: the picture is blank")
    ink /= ink.max()
    rows = np.flatnonzero((ink > INK).any(axis=1))
    cols = np.flatnonzero((ink > INK).any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fitted = _fit(ink, BOX)
    com_row, com_col = _centre_of_mass(fitted)
    height, width = fitted.shape
    top = int(np.clip(round(CENTRE - com_row), 0, IMAGE_SIDE - height))
    left = int(np.clip(round(CENTRE - com_col), 0, IMAGE_SIDE - width))
    digit = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    digit[top : top + height, left : left + width] = fitted
    return digit


def _fit(ink: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, keeping the aspect ratio (Lanczos, anti-aliased)."""
    from PIL import Image

    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)  # mode F
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _read_array(path: pathlib.Path) -> tuple[np.ndarray, bool]:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"not a readable .npy array ({reason(error)})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise UserError(f"expected a numeric array, found {getattr(array, 'dtype', type(array).__name__)}")
    batch = array.ndim == 3
    if array.shape == (IMAGE_SIDE, IMAGE_SIDE):
        array = array[None, ...]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or array.shape[0] == 0:
        raise UserError(f"its shape {array.shape} is not (28, 28) or (N, 28, 28)")
    values = _pixel_values(array)
    if array.dtype.kind in "iu" or values.max() > 1:
        values /= 255
    return values.astype(np.float32), batch
