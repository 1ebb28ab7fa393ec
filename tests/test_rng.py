"""The random sources against their definitions: the book's masks are the notebook's ``randint(2)`` stream."""

import numpy as np

from portable_cnn import get_backend
from portable_cnn.backends import to_host
from portable_cnn.rng import BookRandom


def test_the_books_masks_are_the_notebooks_randint_stream_drawn_at_once():
    shapes = [(3, 7), (2, 7), (1, 129)]
    source, notebook = BookRandom(get_backend("numpy"), 5), np.random.RandomState(5)
    for mask, shape in zip(source.keep_masks(shapes, 0.5), shapes):
        expected = notebook.randint(2, size=shape)
        assert mask.dtype == np.bool_ and np.array_equal(to_host(mask), expected.astype(bool))
    np.testing.assert_array_equal(to_host(source.uniform((4,), "float64")), notebook.random_sample(4))  # same state
