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


def bar(total: int, enabled: bool, unit: str = "img", initial: int = 0):
    """A bar counting trained images (or ``unit``: runs of a sweep) with elapsed time and rate, or a silent stand-in."""
    if not enabled or tqdm is None:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit=unit, unit_scale=unit == "img", file=sys.stderr, dynamic_ncols=True)


def print_line(line: str, file=None):
    """Print a result line to stdout (or ``file``) without tearing a running bar."""
    file = file or sys.stdout
    if tqdm is None:
        print(line, file=file, flush=True)
    else:
        tqdm.write(line, file=file)
        file.flush()
