"""Sweeps: the Cartesian product of seeds and knob values, each an ordinary training run, executed in
parallel worker processes on this machine or on a Dask cluster.

Each run keeps its record in ``OUT/runs/<name>.npz`` (its checkpoint: the final model and its whole
history) beside ``<name>.json`` (its configuration). A sweep started again skips the runs whose
checkpoint is complete and resumes the others from where their checkpoint stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import pathlib
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from . import backends, checkpoint
from .config import RECIPE_FIELDS, Config
from .errors import UserError
from .files import write_atomically
from .runs import Interrupted, train

RUNS_FOLDER = "runs"
RECORD = "sweep.json"  # the folder's sweep: the settings its runs share and the knob values they try
LOCK = "sweep.lock"  # held while a sweep runs in the folder
SUMMARY_NAMES = ("summary.csv", "summary.json", "summary.png")  # the folder's summary (sweep_report writes them)
# Config fields a sweep sets itself, or that make no sense to vary across runs.
NOT_KNOBS = ("seed", "save", "resume", "metrics", "quiet", "progress", "device", "data_dir", "checkpoint_every")
# Fields that must match for a run found in --out to be the run planned (epochs may grow).
SAME_RUN_FIELDS = (*RECIPE_FIELDS, "test_size")
# Settings every run of a folder's sweep shares: another value makes other runs, so it needs another folder.
SWEEP_FIELDS = (*(name for name in RECIPE_FIELDS if name != "seed"), "epochs", "test_size", "test_every")


@dataclass(frozen=True)
class Run:
    """One training of a sweep: its file name, its configuration's label and knob values, and its Config."""

    name: str
    configuration: str
    knobs: dict
    config: Config

    @property
    def path(self) -> pathlib.Path:
        return pathlib.Path(self.config.save)


@dataclass
class Outcome:
    """How a run ended: ``status`` is done, interrupted, not started or failed (``error`` says why); an
    interrupted run's ``saved`` says where it saved (None: it stopped unsaved, at its last checkpoint)."""

    run: Run
    status: str
    summary: dict | None = None
    error: str | None = None
    attempts: int = 1
    saved: str | None = None


def parse_seeds(text: str) -> list[int]:
    """``1-10``, ``1,3,5`` or ``1-3,7`` as a list of seeds in the order given, without repeats."""
    seeds = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise UserError(
                f"--seeds '{text}' is not a list of seeds; write for example 1-10, 1,3,5 or 1-3,7"
            ) from None
        if low < 0 or high < low:
            raise UserError(f"--seeds '{text}': '{part.strip()}' is not a range of seeds (0 or more, low-high)")
        seeds.extend(range(low, high + 1))
    return list(dict.fromkeys(seeds))


def parse_setting(text: str, parsers: dict[str, Callable[[str], object]]) -> tuple[str, list]:
    """``knob=v1,v2`` as (Config field, values), each value read by ``parsers[knob]`` (the train flag's own type)."""
    knob, equals, values = text.partition("=")
    knob = knob.strip().lstrip("-").replace("-", "_")
    if not equals or not knob or not values.strip():
        raise UserError(f"--set '{text}' is not knob=value[,value...]; for example --set alpha=1,2")
    if knob not in parsers:
        hint = "use --seeds for seeds" if knob == "seed" else f"choose from: {', '.join(sorted(parsers))}"
        raise UserError(f"--set {knob}: not a knob a sweep can vary; {hint}")
    parsed = []
    for value in values.split(","):
        try:
            parsed.append(parsers[knob](value.strip()))
        except (ValueError, TypeError) as error:
            raise UserError(f"--set {knob}={value.strip()}: {error}") from None
    return knob, list(dict.fromkeys(parsed))


def plan(base: Config, seeds: list[int], settings: dict[str, list], out) -> list[Run]:
    """Every combination of the knob values (in Config's field order) and seed, as a Run saving under ``out``.

    Each Config is validated here, so an impossible combination stops the sweep before any run starts.
    Paths become absolute, for workers that start in another folder (on another machine, a shared one).
    """
    folder = pathlib.Path(out).absolute() / RUNS_FOLDER  # absolute: a Dask worker may start elsewhere
    if base.data_dir:
        base = dataclasses.replace(base, data_dir=str(pathlib.Path(base.data_dir).absolute()))
    order = [field.name for field in dataclasses.fields(Config)]
    knobs = sorted(settings, key=order.index)
    runs = []
    for values in itertools.product(*(settings[knob] for knob in knobs)):
        chosen = dict(zip(knobs, values))
        label = ",".join(f"{knob}={_text(value)}" for knob, value in chosen.items())
        for seed in seeds:
            name = ",".join(filter(None, (label, f"seed={seed}")))
            config = dataclasses.replace(
                base,
                **chosen,
                seed=seed,
                save=str(folder / f"{name}.npz"),
                resume=None,
                metrics=None,
                quiet=True,
                progress=False,
            )
            dataclasses.replace(config, save=None).validated()
            if "backend" in chosen:  # checked as the --backend flag is, before a worker starts
                backends.check_usable(config.backend, config.device)
            runs.append(Run(name, label or ("book" if config.book else "default"), chosen, config))
    return runs


def _text(value) -> str:
    """A knob value as written in file names: 2.0 as 2, True as true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def folder_record(base: Config, settings: dict[str, list]) -> dict:
    """What a sweep's folder keeps in RECORD: the settings its runs share and the --set values (as JSON has them)."""
    validated = dataclasses.replace(base, save=None, resume=None).validated()
    shared = {name: getattr(validated, name) for name in SWEEP_FIELDS if name not in settings}
    return json.loads(json.dumps({"config": shared, "settings": settings}))


def claim_folder(out, record: dict, force: bool) -> None:
    """Make ``out`` this sweep's folder: refuse, naming the differences, one that holds a sweep with other
    settings (``force``: delete that sweep's runs and summary first); then write ``record`` there."""
    out = pathlib.Path(out)
    path = out / RECORD
    found = None
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            differences = _differences(found, record)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{path} is not a sweep's record ({error}); remove it or use another --out") from None
        if differences and not force:
            raise UserError(
                f"{out} holds a sweep with other settings ({'; '.join(differences)}); use another --out, or "
                f"--force to delete its runs and start again"
            )
    if force and found != record:
        shutil.rmtree(out / RUNS_FOLDER, ignore_errors=True)
        for name in SUMMARY_NAMES:
            (out / name).unlink(missing_ok=True)
    write_atomically(path, (json.dumps(record, indent=1) + "\n").encode(), "a sweep's record")


def _differences(found: dict, wanted: dict) -> list[str]:
    """Each setting that differs between two folder records, as "--epochs 20 there, 30 here"."""
    knobs = set(found["settings"]) | set(wanted["settings"])
    shared = (set(found["config"]) | set(wanted["config"])) - knobs  # a knob's flag value is not used
    differences = []
    for part, names, describe in (("config", shared, _flag_value), ("settings", knobs, _set_value)):
        for name in sorted(names):
            there, here = found[part].get(name), wanted[part].get(name)
            if there != here:
                differences.append(f"{describe(name, there)} there, {describe(name, here)} here")
    return differences


def _flag_value(name: str, value) -> str:
    flag = f"--{name.replace('_', '-')}"
    if value is None:
        return f"no {flag}"
    return flag if value is True else f"no {flag}" if value is False else f"{flag} {value}"


def _set_value(name: str, values) -> str:
    knob = name.replace("_", "-")
    return f"no --set {knob}" if values is None else f"--set {knob}={','.join(_text(value) for value in values)}"


def prepare(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """Create the folders, write each run's configuration file; returns (runs to do, runs already complete).

    A run found in the folder with other settings (another recipe, more epochs) is a UserError:
    its file names say which run it is, so it can only be this sweep's if its settings agree.
    """
    to_do, complete = [], []
    for run in runs:
        run.path.parent.mkdir(parents=True, exist_ok=True)
        record = run.path.with_suffix(".json")
        wanted = run.config.validated()
        if record.is_file():
            _check_same_run(record, wanted)
        if run.path.is_file():
            saved = checkpoint.load(run.path)
            if saved.epoch > wanted.epochs:
                raise UserError(
                    f"{run.path} has {saved.epoch} epochs, more than this sweep's --epochs {wanted.epochs}; "
                    f"use another --out or --epochs {saved.epoch}"
                )
            if saved.epoch == wanted.epochs and saved.batch == 0:
                complete.append(run)
                continue
        write_atomically(
            record, (json.dumps(run_record(run, wanted), indent=1) + "\n").encode(), "a sweep run's record"
        )
        to_do.append(run)
    return to_do, complete


def run_record(run: Run, validated: Config) -> dict:
    """The JSON kept beside a run's checkpoint: its name, configuration, knobs, seed and every Config field."""
    kept = {
        name: value
        for name, value in dataclasses.asdict(validated).items()
        if name not in ("resume", "quiet", "progress")
    }
    return {
        "name": run.name,
        "configuration": run.configuration,
        "knobs": run.knobs,
        "seed": validated.seed,
        "config": kept,
    }


def _check_same_run(record: pathlib.Path, wanted: Config) -> None:
    try:
        found = json.loads(record.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{record} is not a sweep run's record ({error}); remove it or use another --out") from None
    for name in SAME_RUN_FIELDS:
        if found.get(name) != getattr(wanted, name):
            raise UserError(
                f"{record} was run with {name} {found.get(name)}, this sweep has {getattr(wanted, name)}; "
                "use another --out for other settings"
            )


def execute(config: Config, threads: int | None, stop=None) -> dict | str:
    """Train one run to its end in this process (a pool or Dask worker), resuming its checkpoint if there is one.

    Returns the run's summary, or, if it was stopped (``stop.is_set()``; by default SIGINT or SIGTERM), where
    it saved. ``threads`` caps the BLAS and OpenMP threads at this worker's share of the cores. A run whose
    checkpoint is already complete (a run finished by a sweep that was stopped) is summarised, not trained.
    """
    from threadpoolctl import threadpool_limits

    if pathlib.Path(config.save).is_file():
        saved = checkpoint.load(config.save)
        if saved.epoch == config.epochs and saved.batch == 0:
            return summarise_history(saved.history)
        config = dataclasses.replace(config, resume=config.save)
    if threads is not None and config.threads is None:
        config = dataclasses.replace(config, threads=threads)  # the run's own worker threads: this worker's share too
    if threads is not None:
        backends.limit_threads(config.backend, threads)
    with threadpool_limits(limits=threads), StopRequests() if stop is None else contextlib.nullcontext(stop) as stop:
        try:
            result = train(config, stop=stop)
        except Interrupted as stopped:
            done = f"{stopped.epoch} epoch{'' if stopped.epoch == 1 else 's'}"
            return done + (f" and {stopped.batch} of {stopped.batches} batches" if stopped.batch else "")
    return summarise_history([dataclasses.asdict(record) for record in result.history])


def execute_on_cluster(config: Config, threads: int | None, stop_event: str) -> dict | str | None:
    """:func:`execute` in a Dask worker, stopped by the sweep's distributed Event ``stop_event``; None if that
    was set before the run started."""
    stop = ClusterStop(stop_event)
    if stop.is_set():
        return None
    return execute(config, threads, stop)


class ClusterStop:
    """A sweep's stop request seen from a Dask worker, for the trainer's ``is_set()`` before each batch: the
    distributed Event named ``name``, asked the scheduler at most every ``every`` seconds."""

    def __init__(self, name: str, every: float = 0.5):
        from distributed import Event

        self._event, self._every, self._set, self._next = Event(name), every, False, 0.0

    def is_set(self) -> bool:
        if not self._set and time.monotonic() >= self._next:
            self._set, self._next = self._event.is_set(), time.monotonic() + self._every
        return self._set


def summarise_history(history: list[dict]) -> dict:
    """Final and best test accuracy, the epoch of the best (the first if tied) and the seconds trained."""
    tested = [row for row in history if row["test_acc"] is not None]
    best = max(tested, key=lambda row: row["test_acc"])
    return {
        "final": tested[-1]["test_acc"],
        "best": best["test_acc"],
        "best_epoch": best["epoch"],
        "seconds": sum(row["seconds"] for row in history),
    }


class StopRequests:
    """In a process's main thread, SIGINT and SIGTERM set the event the trainer checks between batches.

    The handler stays: a second signal (the terminal's Ctrl-C and the sweep's forwarded one) is harmless.
    Elsewhere (a Dask worker's thread) there is no event to set: there the sweep stops runs with a ClusterStop.
    """

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is not threading.main_thread():
            return None
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, lambda *_: stop.set())
        return stop

    def __exit__(self, *exc_info):
        for number, action in self.previous.items():
            signal.signal(number, action)
        return False


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class LocalEngine:
    """Runs on this machine: ``workers`` slots, each running one run at a time in its own spawned one-process
    pool, so a worker that dies breaks only its own run (which is retried once, in a fresh process).
    ``function(config, threads)`` trains a run in the worker (``execute``; tests put others in its place)."""

    def __init__(self, workers: int, threads: int, devices: list[str] | None = None, function=execute):
        self.workers, self.threads, self.devices, self.function = workers, threads, devices, function
        self._numbers, self._local = itertools.count(), threading.local()  # each slot's index and process pool
        self._pools, self._lock = [], threading.Lock()
        self._slots = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="sweep-slot", initializer=self._open_slot
        )
        self.stopping = threading.Event()
        self.on_retry: Callable[[Run], None] = lambda run: None

    def _open_slot(self):
        self._local.index, self._local.pool = next(self._numbers), None

    def submit(self, run: Run) -> concurrent.futures.Future:
        return self._slots.submit(self._run_in_slot, run)

    def _run_in_slot(self, run: Run) -> Outcome:
        if self.stopping.is_set():
            return Outcome(run, "not started")
        config = run.config
        if self.devices:
            config = dataclasses.replace(config, device=self.devices[self._local.index % len(self.devices)])
        for attempt in (1, 2):
            pool = self._pool()
            try:
                summary = pool.submit(self.function, config, self.threads).result()
            except BrokenProcessPool:
                self._local.pool = None
                pool.shutdown(wait=False)
                if self.stopping.is_set():
                    return Outcome(run, "interrupted", attempts=attempt)
                if attempt == 2:
                    return Outcome(run, "failed", error="its worker process died, twice", attempts=attempt)
                self.on_retry(run)
                continue
            return _outcome(run, summary, attempt)

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._local.pool is None:
            self._local.pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn")
            )
            with self._lock:
                self._pools.append(self._local.pool)
        return self._local.pool

    def describe(self) -> str:
        """Where the runs go, for the sweep's first line."""
        where = f"{len(self.devices)} GPU(s)" if self.devices else f"{self.threads} thread(s) each"
        return f"{self.workers} worker processes, {where}"

    def stop(self):
        """Start no more runs and ask the runs in flight to save and stop (SIGINT to the worker processes)."""
        self.stopping.set()
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGINT)
            except (OSError, TypeError):
                pass

    def close(self):
        self._slots.shutdown(wait=True, cancel_futures=True)
        for pool in self._pools:
            pool.shutdown(wait=True)


class DaskEngine:
    """Runs on a Dask cluster (``dask.distributed``) through its concurrent.futures executor; ``address``
    ``local`` starts a LocalCluster of ``workers`` one-thread processes on this machine. The scheduler
    reschedules the run of a worker that dies (up to its ``allowed-failures``)."""

    def __init__(self, address: str, workers: int, threads: int | None):
        try:
            from distributed import Client, Event, LocalCluster
        except ImportError:
            raise UserError(
                "--scheduler needs dask.distributed, which is not installed; "
                "install it with: pip install 'portable-cnn[distributed]'"
            ) from None
        self.threads, self._cluster = threads, None
        try:
            if address == "local":
                with _ignoring_interrupts():  # the worker processes keep ignoring them: Ctrl-C stops runs in order
                    self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout="10s")
                self.threads = None  # the cluster's workers set their own threads (the nanny sets one per task)
        except (OSError, TimeoutError, ValueError) as error:
            raise UserError(f"--scheduler {address}: cannot reach a Dask scheduler ({error})") from None
        self._executor = self.client.get_executor(pure=False)
        self._stop_name = f"portable-cnn-sweep-stop-{uuid.uuid4().hex}"
        self._stop = Event(self._stop_name, client=self.client)
        self.stopping = threading.Event()
        self.on_retry: Callable[[Run], None] = lambda run: None

    def submit(self, run: Run) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        remote = self._executor.submit(execute_on_cluster, run.config, self.threads, self._stop_name)

        def finished(done):
            if done.cancelled():
                future.set_result(Outcome(run, "not started"))
                return
            try:
                future.set_result(_outcome(run, done.result(), 1))
            except Exception as error:  # noqa: BLE001 - the run's own error, or its worker lost too often (KilledWorker)
                future.set_result(_failed(run, error))

        remote.add_done_callback(finished)
        return future

    def describe(self) -> str:
        return f"the Dask cluster at {self.client.scheduler.address}"

    def stop(self):
        """Ask the runs in flight to save and stop before their next batch (the sweep's distributed Event,
        which the workers look at), and the runs not started to end at once."""
        self.stopping.set()
        self._stop.set()

    def close(self):
        self._executor.shutdown(wait=False)
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


@contextlib.contextmanager
def _ignoring_interrupts():
    """SIGINT ignored while the block starts processes, which inherit that: the terminal's Ctrl-C then reaches
    the sweep only, which asks the runs to save and stop (a worker it killed would lose its run's progress)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _outcome(run: Run, result: dict | str | None, attempts: int) -> Outcome:
    """A worker's result as an Outcome: a summary (done), where a stopped run saved (interrupted) or None (not
    started)."""
    if result is None:
        return Outcome(run, "not started", attempts=attempts)
    if isinstance(result, str):
        return Outcome(run, "interrupted", attempts=attempts, saved=result)
    return Outcome(run, "done", result, attempts=attempts)


def _failed(run: Run, error: BaseException) -> Outcome:
    if isinstance(error, UserError):
        return Outcome(run, "failed", error=str(error))
    return Outcome(run, "failed", error=f"{type(error).__name__}: {error}")


def execute_all(runs: list[Run], engine, on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
    """Submit every run to ``engine`` and report each outcome as it comes; a failed run never stops the others."""
    futures = [engine.submit(run) for run in runs]
    outcomes = []
    for future in concurrent.futures.as_completed(futures):
        try:
            outcome = future.result()
        except concurrent.futures.CancelledError:
            continue
        except Exception as error:  # noqa: BLE001 - whatever a run raises fails that run only
            outcome = _failed(runs[futures.index(future)], error)
        outcomes.append(outcome)
        on_outcome(outcome)
    return outcomes


def make_engine(base: Config, workers: int | None, scheduler: str | None):
    """The engine a sweep runs on: Dask with ``scheduler``, else this machine's cores (or one run per GPU).

    Each worker's threads are its share of the usable cores, so ``workers`` runs never oversubscribe them.
    """
    cores = usable_cores()
    if scheduler:
        workers = workers or cores
        return DaskEngine(scheduler, workers, max(1, cores // workers))
    devices = backends.gpu_devices(base.backend, base.device)
    if devices:
        workers = min(workers or len(devices), len(devices))
    workers = workers or cores
    return LocalEngine(workers, max(1, cores // workers), devices)


class StopOnSignals:
    """The first SIGINT or SIGTERM stops the sweep gently (``engine.stop()``); a second acts at once."""

    def __init__(self, engine):
        self.engine, self.previous, self.signal_name = engine, {}, None

    def __enter__(self):
        def handler(number, frame):
            self.signal_name = signal.Signals(number).name
            signal.signal(number, self.previous[number])
            self.engine.stop()

        for number in (signal.SIGINT, signal.SIGTERM):
            action = signal.signal(number, handler)
            self.previous[number] = signal.SIG_DFL if action is None else action
        return self

    def __exit__(self, *exc_info):
        for number, action in self.previous.items():
            signal.signal(number, action)
        return False
