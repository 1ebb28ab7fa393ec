"""The ``portable-cnn`` command line: ``train`` and ``info``.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from . import __version__
from .backends import BACKENDS, describe_backends
from .errors import UserError
from .trainer import DTYPES, RNGS, Config, train


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _add_train_arguments(parser: argparse.ArgumentParser):
    defaults = Config()
    recipe = parser.add_argument_group("recipe (the book's values by default)")
    recipe.add_argument("--book", action="store_true", help="reproduce the notebook bit for bit, errata included")
    recipe.add_argument("--epochs", type=_at_least(0), default=defaults.epochs)
    recipe.add_argument("--batch-size", type=_at_least(1), default=defaults.batch_size)
    recipe.add_argument("--alpha", type=_positive_float, default=defaults.alpha, help="learning rate")
    recipe.add_argument("--kernels", type=_at_least(1), default=defaults.kernels, help="number of conv kernels")
    recipe.add_argument("--kernel-size", type=_at_least(1), default=defaults.kernel_size, help="kernel side in pixels")
    recipe.add_argument("--train-size", type=_at_least(1), default=defaults.train_size, help="first N training images")
    recipe.add_argument("--test-size", type=_at_least(1), default=defaults.test_size, help="first N test images")
    recipe.add_argument("--seed", type=_at_least(0), default=defaults.seed)
    recipe.add_argument("--dtype", choices=DTYPES, help="float32 by default, float64 with --book")
    recipe.add_argument("--rng", choices=RNGS, default=defaults.rng, help="random numbers of the default recipe")

    run = parser.add_argument_group("run")
    run.add_argument("--backend", choices=BACKENDS, default=defaults.backend)
    run.add_argument("--device", help="cpu, cuda or cuda:N (torch and cupy)")
    run.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz")
    run.add_argument("--eval-batch-size", type=_at_least(1), default=defaults.eval_batch_size)
    run.add_argument("--test-every", type=_at_least(1), default=defaults.test_every, help="evaluate every N epochs")
    run.add_argument("--quiet", action="store_true", help="print nothing while training")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portable-cnn", description="The chapter-10 CNN of Grokking Deep Learning on any array library.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train_parser = commands.add_parser("train", help="train the network on MNIST and print one line per epoch")
    _add_train_arguments(train_parser)
    train_parser.set_defaults(run=_train)
    info_parser = commands.add_parser("info", help="list the backends: installed or not, version, devices")
    info_parser.set_defaults(run=_info)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Config)})


def _train(args) -> int:
    train(config_from_args(args))
    return 0


def _info(args) -> int:
    print(f"portable-cnn {__version__}")
    for row in describe_backends():
        if row["installed"]:
            print(f"{row['backend']:<17} {row['version']:<12} devices: {row['devices']}")
        else:
            print(f"{row['backend']:<17} {'not installed':<12} install: {row['install']}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"portable-cnn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("portable-cnn: interrupted", file=sys.stderr)
        return 130
