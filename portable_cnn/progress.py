"""The progress bar on stderr: tqdm when it is installed (the ``progress`` extra), else none."""

from __future__ import annotations

import sys

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None


class _NoBar:
    """Stands in for a tqdm bar that is switched off or not installed."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, count):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass


def bar(total: int, enabled: bool):
    """A bar counting trained images (elapsed time and images/s included), or a silent stand-in."""
    if not enabled or tqdm is None:
        return _NoBar()
    return tqdm(total=total, unit="img", unit_scale=True, file=sys.stderr, dynamic_ncols=True)


def print_line(line: str):
    """Print a result line to stdout without tearing a running bar."""
    if tqdm is None:
        print(line, flush=True)
    else:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
