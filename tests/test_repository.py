"""The repository itself: no file committed half-merged. CI runs the suite, so a conflict marker fails CI."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What git writes into a file it could not merge: a line opening with seven <, | or > and a space, or exactly
# seven = (as `git diff --check` sees them: a reStructuredText or Markdown underline of another length is fine).
MARKERS = (b"<" * 7 + b" ", b"|" * 7 + b" ", b">" * 7 + b" ")
SEPARATOR = b"=" * 7


def conflict_markers(path: pathlib.Path) -> list[int]:
    """The numbers of the lines of ``path`` that are merge-conflict markers (none in a binary file, as git sees it)."""
    data = path.read_bytes()
    if b"\0" in data[:8000]:
        return []
    return [
        number
        for number, line in enumerate(data.splitlines(), start=1)
        if line.startswith(MARKERS) or line.rstrip(b"\r") == SEPARATOR
    ]


def tracked_files() -> list[pathlib.Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def test_the_marker_check_tells_markers_from_underlines(tmp_path):
    merged = tmp_path / "merged.md"
    merged.write_bytes(b"text\n<<<<<<< HEAD\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> branch\n")
    underlined = tmp_path / "fine.rst"
    underlined.write_bytes(b"Title\n=====\n\nLonger title\n============\n<<<<<<<no space\n  =======\n")
    assert conflict_markers(merged) == [2, 4, 6, 8]
    assert conflict_markers(underlined) == []


def test_no_tracked_file_holds_merge_conflict_markers():
    files = tracked_files()
    assert ROOT / "tests" / "test_repository.py" in files  # the listing works: it has this very file
    found = [f"{path.relative_to(ROOT)}:{line}" for path in files for line in conflict_markers(path)]
    assert found == [], f"merge-conflict markers at {', '.join(found)}: resolve the merge"


def test_no_interrupted_run_is_committed():
    """`train`'s default file for an interrupted run is the user's, never the repository's (.gitignore has it)."""
    assert ROOT / "portable-cnn-interrupted.npz" not in tracked_files()
    ignored = subprocess.run(["git", "check-ignore", "-q", "portable-cnn-interrupted.npz"], cwd=ROOT)
    assert ignored.returncode == 0
