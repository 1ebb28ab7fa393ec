"""The notebook's own code, kept as the baseline that portable-cnn is measured against.

Source: the last code cell of the seed notebook, ``shared/seed/chapter10_cnn_notebook.md``
(chapter 10 of *Grokking Deep Learning*, "learning edges and corners"). The arithmetic is the
notebook's, line for line, including its errata; only three things differ:

- MNIST comes from the shared IDX files (``portable_cnn.load_mnist``) instead of
  ``keras.datasets.mnist.load_data()`` — the same arrays, without keras;
- the two loops of an epoch (training, then the test set one image at a time) are split into
  :meth:`Notebook.train_epoch` and :meth:`Notebook.evaluate` so a benchmark can time them apart;
- the global setup became :meth:`Notebook.__init__` (same ``np.random.seed(1)``, same draw order).

``python benchmarks/reference/notebook_cnn.py --epochs 3`` prints the book's first three lines.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def tanh(x):
    return np.tanh(x)


def tanh2deriv(output):
    return 1 - (output**2)


def softmax(x):
    temp = np.exp(x)
    return temp / np.sum(temp, axis=1, keepdims=True)


def get_image_section(layer, row_from, row_to, col_from, col_to):
    section = layer[:, row_from:row_to, col_from:col_to]
    return section.reshape(-1, 1, row_to - row_from, col_to - col_from)


def one_hot(labels):
    encoded = np.zeros((len(labels), 10))
    for i, l in enumerate(labels):
        encoded[i][l] = 1
    return encoded


class Notebook:
    """The notebook's state (data, kernels, weights) after its setup cell; one epoch = train_epoch + evaluate."""

    alpha, batch_size = 2, 128
    input_rows = input_cols = 28
    kernel_rows = kernel_cols = 3
    num_kernels = 16
    hidden_size = ((input_rows - kernel_rows) * (input_cols - kernel_cols)) * num_kernels

    def __init__(self, x_train, y_train, x_test, y_test, train_size=1000):
        np.random.seed(1)
        self.images = x_train[0:train_size].reshape(train_size, 28 * 28) / 255
        self.labels = one_hot(y_train[0:train_size])
        self.test_images = x_test.reshape(len(x_test), 28 * 28) / 255
        self.test_labels = one_hot(y_test)
        self.kernels = 0.02 * np.random.random((self.kernel_rows * self.kernel_cols, self.num_kernels)) - 0.01
        self.weights_1_2 = 0.2 * np.random.random((self.hidden_size, 10)) - 0.1

    def _flattened_input(self, layer_0):
        sects = list()  # noqa: C408 (the notebook's code, verbatim)
        for row_start in range(layer_0.shape[1] - self.kernel_rows):
            for col_start in range(layer_0.shape[2] - self.kernel_cols):
                sect = get_image_section(
                    layer_0, row_start, row_start + self.kernel_rows, col_start, col_start + self.kernel_cols
                )
                sects.append(sect)
        expanded_input = np.concatenate(sects, axis=1)
        es = expanded_input.shape
        return expanded_input.reshape(es[0] * es[1], -1), es

    def train_epoch(self) -> int:
        """The notebook's training loop for one epoch; returns ``correct_cnt``."""
        images, labels, batch_size, alpha = self.images, self.labels, self.batch_size, self.alpha
        correct_cnt = 0
        for i in range(int(len(images) / batch_size)):
            batch_start, batch_end = ((i * batch_size), ((i + 1) * batch_size))
            layer_0 = images[batch_start:batch_end]
            layer_0 = layer_0.reshape(layer_0.shape[0], 28, 28)
            flattened_input, es = self._flattened_input(layer_0)

            kernel_output = flattened_input.dot(self.kernels)
            layer_1 = tanh(kernel_output.reshape(es[0], -1))
            dropout_mask = np.random.randint(2, size=layer_1.shape)
            layer_1 *= dropout_mask * 2
            layer_2 = softmax(np.dot(layer_1, self.weights_1_2))

            for k in range(batch_size):
                labelset = labels[batch_start + k : batch_start + k + 1]
                _inc = int(np.argmax(layer_2[k : k + 1]) == np.argmax(labelset))
                correct_cnt += _inc

            layer_2_delta = (labels[batch_start:batch_end] - layer_2) / (batch_size * layer_2.shape[0])
            layer_1_delta = layer_2_delta.dot(self.weights_1_2.T) * tanh2deriv(layer_1)
            layer_1_delta *= dropout_mask
            self.weights_1_2 += alpha * layer_1.T.dot(layer_2_delta)
            l1d_reshape = layer_1_delta.reshape(kernel_output.shape)
            k_update = flattened_input.T.dot(l1d_reshape)
            self.kernels -= alpha * k_update
        return correct_cnt

    def evaluate(self) -> int:
        """The notebook's test loop, one image at a time; returns ``test_correct_cnt``."""
        test_images, test_labels = self.test_images, self.test_labels
        test_correct_cnt = 0
        for i in range(len(test_images)):
            layer_0 = test_images[i : i + 1]
            layer_0 = layer_0.reshape(layer_0.shape[0], 28, 28)
            flattened_input, es = self._flattened_input(layer_0)

            kernel_output = flattened_input.dot(self.kernels)
            layer_1 = tanh(kernel_output.reshape(es[0], -1))
            layer_2 = np.dot(layer_1, self.weights_1_2)

            test_correct_cnt += int(np.argmax(layer_2) == np.argmax(test_labels[i : i + 1]))
        return test_correct_cnt

    def line(self, epoch: int, correct_cnt: int, test_correct_cnt: int) -> str:
        """The notebook's progress line."""
        return (
            "I:"
            + str(epoch)
            + " Test-Acc:"
            + str(test_correct_cnt / float(len(self.test_images)))
            + " Train-Acc:"
            + str(correct_cnt / float(len(self.images)))
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the seed notebook's chapter-10 CNN on the shared MNIST files.")
    parser.add_argument("--epochs", type=int, default=3, help="the notebook runs 300; about 12.5 s each on 2 cores")
    parser.add_argument("--data-dir", help="MNIST IDX folder (default: portable_cnn's search order)")
    args = parser.parse_args(argv)

    from portable_cnn import load_mnist

    mnist = load_mnist(args.data_dir)
    notebook = Notebook(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)
    for epoch in range(args.epochs):
        correct_cnt = notebook.train_epoch()
        print(notebook.line(epoch, correct_cnt, notebook.evaluate()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
