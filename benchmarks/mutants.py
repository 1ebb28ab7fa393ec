"""Mutation check: the share of small faults in the training math that a fast subset of the tests catches.

    python benchmarks/mutants.py [--minutes 18] [--modules ops,model,rng,philox,optim] [--json FILE] [--retry FILE]

A mutant is one change in one of portable_cnn's math modules (an operator of :data:`BINARY` or :data:`COMPARE`
swapped, ``and``/``or``, a unary minus dropped, a number ``n`` made ``n + 1``) written into a copy of the repository;
:data:`TESTS` run against it in a forked child, which inherits numpy, pytest and array-api-strict imported, and kill
it by failing, erroring or running past 3x the clean run + 10 s. Mutants go in a fixed shuffled order, philox.py's
last, until ``--minutes`` run out; each survivor is printed with its line.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("ops", "model", "rng", "philox", "optim")
# No slow tests; the fastest first, as -x stops at the first failure. SELECT: numpy only by default (array-api-strict's
# runs are slow, torch's and jax's imports too; the forked children import them afresh, never the parent).
SELECT = "not jax and not torch and not strict"
TESTS = [
    "tests/test_training_math.py",
    "tests/test_ops.py",
    "tests/test_rng.py",
    "tests/test_philox.py",
    "-m",
    "not slow and not gpu",
]

BINARY = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
SYMBOL = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.Lt: "<",
    ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.And: "and", ast.Or: "or",
}  # fmt: skip


@dataclass
class Mutant:
    module: str
    site: int  # the index of the change among the module's sites, in the order ast.walk visits them
    line: int
    change: str
    source: str  # the original line
    outcome: str = "not run"  # killed, survived, timeout (killed), not run


def _never_mutated(tree) -> set[int]:
    """ids of the docstring constants and of every node inside a type annotation (``str | None`` is no arithmetic)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
        parts = [getattr(node, "annotation", None), node.returns if isinstance(node, ast.FunctionDef) else None]
        for part in parts:
            if isinstance(part, ast.AST):
                found.update(id(inner) for inner in ast.walk(part))
    return found


def _changes(node) -> list[tuple[str, callable]]:
    """The mutations of one node: (description, a function that applies it in place)."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY:
        new = BINARY[type(node.op)]
        return [(f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", lambda: setattr(node, "op", new()))]
    if isinstance(node, ast.Compare):
        return [
            (f"{SYMBOL[type(op)]} -> {SYMBOL[COMPARE[type(op)]]}", lambda i=i, op=op: _set(node.ops, i, op))
            for i, op in enumerate(node.ops)
            if type(op) in COMPARE
        ]
    if isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        return [(f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", lambda: setattr(node, "op", new()))]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return [("-x -> x", lambda: setattr(node, "op", ast.UAdd()))]
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return [(f"{node.value!r} -> {node.value + 1!r}", lambda: setattr(node, "value", node.value + 1))]
    return []


def _set(ops, index, op):
    ops[index] = COMPARE[type(op)]()


def sites(source: str) -> list[tuple[ast.AST, str, callable]]:
    """Every (node, change, apply) of a module's source, in a fixed order."""
    tree = ast.parse(source)
    skip = _never_mutated(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) not in skip:
            found += [(node, change, apply) for change, apply in _changes(node)]
    return tree, found


def mutants(modules) -> list[Mutant]:
    listed = []
    for module in modules:
        source = (REPO / "portable_cnn" / f"{module}.py").read_text()
        lines = source.splitlines()
        _, found = sites(source)
        for index, (node, change, _) in enumerate(found):
            listed.append(Mutant(module, index, node.lineno, change, lines[node.lineno - 1].strip()))
    return listed


def mutated_source(mutant: Mutant) -> str:
    source = (REPO / "portable_cnn" / f"{mutant.module}.py").read_text()
    tree, found = sites(source)
    found[mutant.site][2]()
    return ast.unparse(ast.fix_missing_locations(tree))


def run_tests(copy: Path, cap: float, select: str = SELECT) -> str:
    """'passed', 'failed' or 'timeout': the tests against the package in ``copy``, in a forked child."""
    pid = os.fork()
    if pid == 0:  # the child: the package and the tests imported fresh from the copy
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.chdir(copy)
            sys.path.insert(0, str(copy))
            import pytest

            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-k", select, *TESTS])
        except BaseException:
            code = 99
        os._exit(int(code))
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "timeout"


@contextlib.contextmanager
def repository_copy():
    """The repository (sources and tests, no .git or caches) in a temporary folder, bytecode never written."""
    sys.dont_write_bytecode = True
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        copy = Path(folder) / "repo"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "results", "*.npz", "wheels"))
        yield copy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/mutants.py", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=18.0, help="stop trying mutants after this long")
    parser.add_argument("--modules", default=",".join(MODULES), help="portable_cnn modules to mutate")
    parser.add_argument("--json", help="write every mutant and its outcome here")
    parser.add_argument("--select", default=SELECT, help=f"pytest -k expression for the tests (default: {SELECT})")
    parser.add_argument("--retry", help="try only the survivors listed in an earlier run's --json file")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per mutant run: the machine is shared
    import array_api_strict  # noqa: F401  (imported once here, inherited by every forked child)
    import numpy  # noqa: F401
    import pytest  # noqa: F401

    listed = mutants(args.modules.split(","))
    if args.retry:
        survivors = {
            (m["module"], m["site"]) for m in json.loads(Path(args.retry).read_text()) if m["outcome"] == "survived"
        }
        listed = [mutant for mutant in listed if (mutant.module, mutant.site) in survivors]
    random.Random(0).shuffle(listed)
    listed.sort(key=lambda mutant: mutant.module == "philox")  # the training math first, then the generator's bits
    with repository_copy() as copy:
        started = time.monotonic()
        clean = run_tests(copy, 3600, args.select)
        baseline = time.monotonic() - started
        if clean != "passed":
            print(f"the tests fail without any mutant ({clean}): fix them first", file=sys.stderr)
            return 1
        cap = 3 * baseline + 10
        print(f"{len(listed)} mutants; the clean run takes {baseline:.1f} s, cap {cap:.0f} s a mutant", flush=True)
        end = started + 60 * args.minutes
        for mutant in listed:
            if time.monotonic() > end:
                break
            target = copy / "portable_cnn" / f"{mutant.module}.py"
            original = target.read_text()
            target.write_text(mutated_source(mutant))
            try:
                result = run_tests(copy, cap, args.select)
            finally:
                target.write_text(original)
            mutant.outcome = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[result]
            if result == "passed":
                print(f"SURVIVED {mutant.module}.py:{mutant.line}: {mutant.change}   | {mutant.source}", flush=True)
    tried = [m for m in listed if m.outcome != "not run"]
    killed = [m for m in tried if m.outcome in ("killed", "timeout")]
    print(f"killed {len(killed)} of {len(tried)} mutants tried ({len(listed)} in all): {len(killed) / len(tried):.1%}")
    for module in args.modules.split(","):
        mine = [m for m in tried if m.module == module]
        dead = sum(m.outcome != "survived" for m in mine)
        print(f"  {module}.py: {dead}/{len(mine)}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(m) for m in sorted(listed, key=lambda m: (m.module, m.site))]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
