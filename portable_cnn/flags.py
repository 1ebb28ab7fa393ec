"""The command-line flags of ``train`` and ``sweep``, and the README's flag table, both read from Config's
declarations (:func:`config.setting`): a setting is declared once, in :mod:`config`.

``python -m portable_cnn.flags`` prints the README's table (a test checks that the README holds it).
"""

from __future__ import annotations

import argparse
import dataclasses

from .config import FIELDS, KINDS, flag, parse, value_type

GROUPS = {"recipe": "recipe (a resumed run keeps it)", "run": "run", "files": "checkpoints, metrics and data"}
METAVARS = {"int": "N", "float": "X", "str": "TEXT"}


def default_text(field: dataclasses.Field) -> str | None:
    """A field's default as its help says it (2.0 as 2); None where Config leaves it to the recipe or machine."""
    if field.default is None or isinstance(field.default, bool):
        return None
    return f"{field.default:g}" if isinstance(field.default, float) else str(field.default)


def help_text(field: dataclasses.Field) -> str:
    shown = default_text(field)
    return field.metadata["help"] + (f" (default {shown})" if shown is not None else "")


def add_config_arguments(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """One flag per Config field (in a sweep, those it does not set itself). Each defaults to None ("not given")
    and Config supplies the default, so that --resume can tell the flags given from the ones left out."""
    groups = {kind: parser.add_argument_group(title) for kind, title in GROUPS.items()}
    for name, field in FIELDS.items():
        if sweep and field.metadata["sweep"] == "none":
            continue
        group, kind = groups[field.metadata["kind"]], value_type(field)
        if kind == "bool":
            action = argparse.BooleanOptionalAction if field.default is None else "store_true"
            group.add_argument(flag(name), action=action, default=None, help=help_text(field))
            continue
        choices = field.metadata["choices"] or None
        group.add_argument(
            flag(name),
            type=_argument_type(name),
            choices=choices,
            metavar=None if choices else field.metadata["metavar"] or METAVARS[kind],
            help=help_text(field),
        )


def _argument_type(name: str):
    def read(text: str):
        try:
            return parse(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return read


def markdown() -> str:
    """The README's table of train's flags: flag, default (—: see the meaning), kind and meaning, in Config's
    order; a choice's ``|`` escaped for Markdown tables."""
    rows = ["| flag | default | kind | meaning |", "| --- | --- | --- | --- |"]
    for name, field in FIELDS.items():
        choices = field.metadata["choices"]
        kind = value_type(field)
        if kind == "bool":
            written = f"`{flag(name)}`" if field.default is not None else f"`{flag(name)}` / `--no-{flag(name)[2:]}`"
        else:
            values = "\\|".join(choices) if choices else field.metadata["metavar"] or METAVARS[kind]
            written = f"`{flag(name)} {values}`"
        shown = default_text(field)
        default = f"`{shown}`" if shown is not None else ("off" if field.default is False else "—")
        rows.append(f"| {written} | {default} | {field.metadata['kind']} | {field.metadata['help']} |")
    kinds = "; ".join(f"**{kind}**: {meaning}" for kind, meaning in KINDS.items())
    return "\n".join([*rows, "", f"Kinds — {kinds}."])


if __name__ == "__main__":
    print(markdown())
