"""Each setting is declared once, in Config: every field is a train flag with Config's default, a sweep's
--set reads a knob as its flag does, and validation follows the declared bounds and choices."""

import dataclasses

import pytest

from portable_cnn import Config, UserError
from portable_cnn.cli import build_parser, config_from_args
from portable_cnn.config import FIELDS, KNOBS, RECIPE_FIELDS
from portable_cnn.sweep import parse_setting


def _flag(name):
    return "--" + name.replace("_", "-")


def test_every_field_is_a_train_flag_and_no_flag_means_configs_default():
    given = build_parser().parse_args(["train"])
    assert all(getattr(given, name) is None for name in FIELDS)  # None: "not given", for --resume
    assert config_from_args(given) == Config()


def _train_help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_field_has_its_flag_in_trains_help(capsys):
    shown = _train_help(capsys)
    assert [name for name in FIELDS if _flag(name) not in shown] == []


@pytest.mark.parametrize(
    "field", [field for field in dataclasses.fields(Config) if field.default is not None], ids=lambda field: field.name
)
def test_each_flag_reads_its_default_and_shows_it(field, capsys):
    if isinstance(field.default, bool):  # a switch: given, it is on
        assert getattr(build_parser().parse_args(["train", _flag(field.name)]), field.name) is True
        return
    text = f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
    assert getattr(build_parser().parse_args(["train", _flag(field.name), text]), field.name) == field.default
    assert f"(default {text})" in _train_help(capsys)


def test_the_recipe_is_the_fields_declared_recipe():
    assert set(RECIPE_FIELDS) == {
        "book", "dtype", "rng", "seed", "alpha", "kernel_alpha", "kernel_init", "weight_init",
        "batch_size", "kernels", "kernel_size", "train_size",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("batch-size=16,32", ("batch_size", [16, 32])),
        ("kernel_init=0.5,1", ("kernel_init", [0.5, 1.0])),
        ("book=yes,no", ("book", [True, False])),
        ("dtype=float64", ("dtype", ["float64"])),
    ],
)
def test_set_reads_values_as_the_flags_do(text, expected):
    assert parse_setting(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch-size=0", "must be at least 1, not 0"),
        ("alpha=-1", "must be a positive number"),
        ("dtype=float16", "'float16' is not one of: float32, float64"),
        ("kernels=two", "'two' is not a whole number"),
        ("save=x.npz", "not a knob a sweep can vary"),
    ],
)
def test_set_refuses_what_the_declarations_refuse(text, message):
    with pytest.raises(UserError, match=message):
        parse_setting(text)


def test_a_sweep_never_varies_what_it_sets_per_run_or_what_is_not_the_run():
    assert "alpha" in KNOBS and "book" in KNOBS
    assert not {"seed", "save", "resume", "metrics", "quiet", "progress", "device", "data_dir"} & set(KNOBS)
