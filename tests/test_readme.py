"""The README runs as written: its library example, and its test command is the one CI runs."""

import re

from .conftest import REPO


def test_readme_library_example_runs(mnist_dir, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text()
    library = readme.split("## Library", 1)[1]
    example = re.search(r"```python\n(.*?)```", library, re.DOTALL).group(1)
    monkeypatch.setenv("PORTABLE_CNN_DATA_DIR", str(mnist_dir))
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"I:2 Test-Acc:[0-9.]+ Train-Acc:[0-9.]+", printed[0])
    assert len(printed) == 2


def test_ci_runs_the_readmes_test_command_verbatim():
    """The quick start's test command is the very line .ci/run runs, so what CI passes is what a user runs."""
    quick_start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    [command] = [line for line in quick_start.splitlines() if "pytest" in line]
    assert command == "pip install '.[test]' torch==2.13.0 && python -m pytest -q"
    assert command in (REPO / ".ci" / "run").read_text()
