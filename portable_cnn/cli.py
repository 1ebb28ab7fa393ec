"""The ``portable-cnn`` command line: ``train``, ``sweep``, ``evaluate``, ``predict``, ``plot``, ``export``, ``serve``,
``info``.

Bad input ends in one line on stderr and exit status 2, never a traceback. ``train`` stops cleanly on
the first Ctrl-C or SIGTERM (the batch finishes, a checkpoint is written, exit status 130) and ends
with status 1 if training diverges; ``predict`` ends with status 1 if any file could not be read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shlex
import signal
import sys
import threading

from . import checkpoint
from .backends import BACKENDS, default_eval_batch, describe_backends, get_backend, to_host
from .config import Config
from .errors import UserError, reason
from .flags import add_config_arguments
from .runs import Diverged, Interrupted, config_from_checkpoint, train
from .version import __version__

HOST, PORT = "127.0.0.1", 8000  # where the page is served unless --host and --port say otherwise


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


def _port(text: str) -> int:
    port = _at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, not {port}")
    return port


def _add_page_arguments(parser: argparse.ArgumentParser, live: bool = False):
    page = parser.add_argument_group("the page" + (" (with --live)" if live else ""))
    if live:
        page.add_argument(
            "--live", action="store_true", help="serve the page (see: portable-cnn serve) with the run updating live"
        )
    page.add_argument(
        "--port", type=_port, default=None if live else PORT, help=f"(default {PORT}; 0 takes a free port)"
    )
    page.add_argument(
        "--host",
        default=None if live else HOST,
        help=f"the address to listen on (default {HOST}: this machine only; any other is warned about)",
    )
    page.add_argument("--open", action="store_true", help="open the page in the web browser")


def _add_backend_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="(default numpy)")
    parser.add_argument(
        "--device", help="cpu (the default), cuda or cuda:N (torch and cupy), device1 (array-api-strict)"
    )


def _add_checkpoint_argument(parser: argparse.ArgumentParser, required: bool = True):
    parser.add_argument("--checkpoint", metavar="PATH", required=required, help="a checkpoint written by train --save")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portable-cnn", description="The chapter-10 CNN of Grokking Deep Learning on any array library."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train_parser = commands.add_parser("train", help="train the network on MNIST and print one line per epoch")
    add_config_arguments(train_parser)
    _add_page_arguments(train_parser, live=True)
    train_parser.set_defaults(run=_train)

    sweep_parser = commands.add_parser(
        "sweep",
        help="many runs, every seed with every combination of knob values, in parallel; a table of the results",
        description="Train every seed of --seeds with every combination of the --set values, each run as "
        "'train' would with the other flags, its checkpoint and history in OUT/runs/. Run again to skip the "
        "runs complete and resume the others.",
    )
    add_config_arguments(sweep_parser, sweep=True)
    plan = sweep_parser.add_argument_group("sweep")
    plan.add_argument("--seeds", default="1", help="seeds to run, such as 1-10, 1,3,5 or 1-3,7 (default 1)")
    plan.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=V1,V2",
        help="values of a training flag to try, such as alpha=1,2 or kernel-init=0.5,1 (repeat for more knobs)",
    )
    plan.add_argument(
        "--out", metavar="DIR", help="the sweep's folder: runs/ (a checkpoint and a JSON each) and the summary"
    )
    plan.add_argument(
        "--workers", type=_at_least(1), help="runs at a time (default: the usable cores; on GPUs one per GPU)"
    )
    plan.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster at ADDRESS (tcp://host:8786), or 'local' for a LocalCluster here",
    )
    plan.add_argument("--report", metavar="DIR", help="only rebuild the summary table and files from the sweep in DIR")
    plan.add_argument(
        "--force",
        action="store_true",
        help="if --out holds a sweep with other settings (epochs, recipe, --set), delete its runs and start again",
    )
    sweep_parser.set_defaults(run=_sweep)

    evaluate_parser = commands.add_parser(
        "evaluate", help="a checkpoint's test accuracy, per-class accuracy and confusion matrix"
    )
    _add_checkpoint_argument(evaluate_parser)
    _add_backend_arguments(evaluate_parser)
    evaluate_parser.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz")
    evaluate_parser.add_argument("--test-size", type=_at_least(1), help="first N test images (default: all)")
    evaluate_parser.add_argument("--eval-batch-size", type=_at_least(1), help="(default 64 on a CPU, 10000 on a GPU)")
    evaluate_parser.add_argument("--plot", metavar="OUT.png", help="also draw the confusion matrix")
    evaluate_parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    evaluate_parser.set_defaults(run=_evaluate)

    predict_parser = commands.add_parser("predict", help="the digit in each picture (PNG, JPEG, ...) or .npy array")
    _add_checkpoint_argument(predict_parser)
    _add_backend_arguments(predict_parser)
    predict_parser.add_argument(
        "files", nargs="+", metavar="FILE", help="pictures of digits, or .npy arrays (28, 28) / (N, 28, 28)"
    )
    predict_parser.add_argument("--json", action="store_true", help="print the results as one JSON array")
    predict_parser.set_defaults(run=_predict)

    plot_parser = commands.add_parser("plot", help="draw kernels, feature maps or accuracy curves to a picture file")
    pictures = plot_parser.add_subparsers(dest="picture", required=True, parser_class=_Parser)
    kernels_parser = pictures.add_parser("kernels", help="the learned kernels (the chapter's edges and corners)")
    _add_checkpoint_argument(kernels_parser)
    kernels_parser.set_defaults(run=_plot_kernels)
    maps_parser = pictures.add_parser("maps", help="a test digit and its feature maps")
    _add_checkpoint_argument(maps_parser)
    _add_backend_arguments(maps_parser)
    digit = maps_parser.add_mutually_exclusive_group()
    digit.add_argument("--index", type=_at_least(0), default=0, help="which test image (default 0)")
    digit.add_argument("--image", metavar="FILE", help="a picture or .npy file instead of a test image")
    maps_parser.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz")
    maps_parser.set_defaults(run=_plot_maps)
    curves_parser = pictures.add_parser("curves", help="train and test accuracy per epoch")
    source = curves_parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", metavar="FILE", help="a .csv or .jsonl file written by train --metrics")
    source.add_argument("--checkpoint", metavar="PATH", help="a checkpoint (its history)")
    curves_parser.set_defaults(run=_plot_curves)
    for picture in (kernels_parser, maps_parser, curves_parser):
        picture.add_argument(
            "-o", "--output", required=True, metavar="OUT.png", help="the picture file (.png, .svg, .pdf)"
        )

    serve_parser = commands.add_parser(
        "serve",
        help="a local page for a saved model: draw a digit, see its feature maps, kernels, votes and curves",
        description="Serve a page (on this machine only, by default) that shows the model seeing, deciding and "
        "learning: draw a digit and watch its 28x28 input, feature maps, each kernel's votes and the ten "
        "probabilities; the kernels and the accuracy curves. Ctrl-C stops it.",
    )
    _add_checkpoint_argument(serve_parser)
    _add_page_arguments(serve_parser)
    serve_parser.set_defaults(run=_serve)
    export_parser = commands.add_parser(
        "export", help="write a checkpoint's network as an ONNX graph or a safetensors file, for use elsewhere"
    )
    _add_checkpoint_argument(export_parser)
    export_parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the file to write: OUT.onnx or OUT.safetensors"
    )
    export_parser.add_argument(
        "--format", choices=("onnx", "safetensors"), help="the format (default: from the extension of OUT)"
    )
    export_parser.set_defaults(run=_export)

    info_parser = commands.add_parser(
        "info", help="the backends (installed or not, version, devices) and the data a run would use"
    )
    info_parser.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz")
    info_parser.add_argument(
        "--train-size", type=_at_least(1), default=Config().train_size, help="training images a run would ask for"
    )
    info_parser.add_argument(
        "--test-size", type=_at_least(1), default=Config().test_size, help="test images a run would ask for"
    )
    info_parser.set_defaults(run=_info)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's Config from every Config field's flag: the flags given, Config's defaults for the rest.

    With --resume, the checkpoint's recipe and settings come first and the flags given override them.
    """
    given = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(Config)}
    given = {name: value for name, value in given.items() if value is not None}
    if given.get("resume"):
        return config_from_checkpoint(checkpoint.load(given["resume"]), **given)
    return Config(**given)


@contextlib.contextmanager
def _stop_on_signals():
    """The first SIGINT or SIGTERM sets the event the trainer looks at between calls (batches, or epochs where
    those are one call); a second acts at once."""
    stop = threading.Event()
    stop.signal_name = None
    previous = {}

    def handler(number, frame):
        stop.signal_name = signal.Signals(number).name
        stop.set()
        signal.signal(number, previous[number])

    for number in (signal.SIGINT, signal.SIGTERM):
        action = signal.signal(number, handler)
        previous[number] = signal.SIG_DFL if action is None else action
    try:
        yield stop
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def _train(args) -> int:
    config = config_from_args(args)
    if not args.live and (args.port is not None or args.host is not None or args.open):
        raise UserError("--port, --host and --open are for the live page: add --live")
    with _stop_on_signals() as stop:
        page = callbacks = None
        if args.live:
            from .web.live import Board, Publish

            config.validated()  # a bad flag is refused before the page is served
            board = Board()
            page = _serve_page(board, args.host or HOST, PORT if args.port is None else args.port, args.open)
            callbacks = (Publish(board),)
        try:
            result = train(config, stop=stop, callbacks=callbacks or ())
        except Interrupted as stopped:
            why = stop.signal_name or "interrupted"
            print(
                f"portable-cnn: {why}: {stopped}; resume with: portable-cnn train --resume {shlex.quote(stopped.path)}",
                file=sys.stderr,
            )
            return 130
        except Diverged as error:
            print(f"portable-cnn: error: {error}", file=sys.stderr)
            return 1
        if config.save and not config.quiet:
            print(f"portable-cnn: saved {config.save} ({len(result.history)} epochs)", file=sys.stderr)
        if page is not None:
            print(f"portable-cnn: training ended; still serving {page.url} until Ctrl-C", file=sys.stderr)
            _serve_until(stop, page)
    return 0


def _serve(args) -> int:
    from .web.live import Board, epoch_entry
    from .web.snapshot import Snapshot

    saved = checkpoint.load(args.checkpoint)
    try:
        history = [epoch_entry(row) for row in saved.history]
    except (KeyError, TypeError) as error:
        raise UserError(f"the checkpoint {saved.path} is corrupt: its history lacks {reason(error)}") from None
    snapshot = Snapshot.of(saved.to_model(get_backend("numpy")), saved.recipe, saved.epoch)
    with _stop_on_signals() as stop:
        page = _serve_page(Board(snapshot, history, done=True), args.host, args.port, args.open)
        print(f"portable-cnn: serving {saved.describe()} until Ctrl-C", file=sys.stderr)
        _serve_until(stop, page)
    return 0


def _serve_page(board, host: str, port: int, open_browser: bool):
    """Serve the page for ``board`` from a daemon thread; one line on stderr with its URL (and a warning first when
    it listens beyond this machine)."""
    from .web import server

    page = server.start(board, host, port)
    if not server.is_loopback(host):
        print(
            f"portable-cnn: warning: --host {host} lets other machines reach the page and the model it shows",
            file=sys.stderr,
        )
    print(f"portable-cnn: the page is at {page.url}", file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(page.url)
    return page


def _serve_until(stop: threading.Event, page) -> None:
    """Keep serving until ``stop`` is set (by Ctrl-C or SIGTERM), then close the server."""
    stop.wait()
    page.shutdown()
    page.server_close()


def _sweep(args) -> int:
    from . import sweep
    from .callbacks import show_progress
    from .files import check_output_folder, locked

    if args.report:
        return _sweep_report(args.report)
    if not args.out:
        raise UserError(
            "sweep needs --out DIR, the folder for its runs and summary (or --report DIR to rebuild a summary)"
        )
    base = config_from_args(args)
    settings = {}
    for text in args.set:
        knob, values = sweep.parse_setting(text)
        if knob in settings:
            raise UserError(f"--set {knob} is given twice; list all its values in one: --set {knob}=v1,v2")
        settings[knob] = values
    runs = sweep.plan(base, sweep.parse_seeds(args.seeds), settings, args.out)
    show_bar = show_progress(args)
    out = check_output_folder(args.out, "a sweep")
    busy = f"another sweep is running in {out} (it holds {out / sweep.LOCK}); wait for it to end or use another --out"
    with locked(out / sweep.LOCK, busy):
        sweep.claim_folder(out, sweep.folder_record(base, settings), args.force)
        to_do, complete = sweep.prepare(runs)
        engine = sweep.make_engine(base, args.workers, args.scheduler)
        try:
            print(
                f"sweep: {_runs(len(runs))}, {len(complete)} already complete, {len(to_do)} to run on "
                f"{engine.describe()}",
                file=sys.stderr,
            )
            outcomes, signal_name = _execute_sweep(engine, to_do, len(runs), len(complete), args.quiet, show_bar)
        finally:
            engine.close()
        _sweep_report(args.out)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    order = {run.name: index for index, run in enumerate(runs)}
    stopped = sorted(
        (outcome for outcome in outcomes if outcome.status in ("interrupted", "not started")),
        key=lambda outcome: order[outcome.run.name],
    )
    if stopped:
        print(f"portable-cnn: {signal_name or 'interrupted'}: {_stopped_runs(stopped)}", file=sys.stderr)
        return 130
    if failed:
        print(
            f"portable-cnn: {len(failed)} of {_runs(len(runs))} failed: "
            + ", ".join(outcome.run.name for outcome in failed),
            file=sys.stderr,
        )
        return 1
    return 0


def _stopped_runs(stopped) -> str:
    """Which runs a stopped sweep saved where they stopped, which it did not, which never started: one line."""
    saved = [f"{outcome.run.name} (after {outcome.saved})" for outcome in stopped if outcome.saved]
    unsaved = [outcome.run.name for outcome in stopped if outcome.status == "interrupted" and not outcome.saved]
    waiting = [outcome.run.name for outcome in stopped if outcome.status == "not started"]
    parts = [
        f"saved where they stopped: {', '.join(saved)}" if saved else "",
        f"stopped unsaved (they go on from their last checkpoint): {', '.join(unsaved)}" if unsaved else "",
        f"not started: {', '.join(waiting)}" if waiting else "",
    ]
    return (
        f"{_runs(len(stopped))} not finished; " + "; ".join(filter(None, parts)) + "; run the same command again "
        "to finish them"
    )


def _execute_sweep(engine, to_do, total: int, complete: int, quiet: bool | None, show_bar: bool):
    """The runs' outcomes, each reported as it comes, with a bar counting runs; and the signal that stopped it,
    if any. A reader that goes away (``sweep | head -1``) stops the sweep as Ctrl-C does, then ends it."""
    from . import sweep
    from .callbacks import print_line, tqdm

    engine.on_retry = lambda run: print_line(
        f"portable-cnn: {run.name}: its worker process died; running it again", file=sys.stderr
    )
    bar = tqdm(total=total, initial=complete, unit="run", file=sys.stderr, dynamic_ncols=True) if show_bar else None
    closed = []

    def finished(outcome):
        summary = outcome.summary
        if outcome.status == "done":
            if bar is not None:
                bar.update(1)
            if not quiet and not closed:
                try:
                    print_line(
                        f"{outcome.run.name}: final test acc {summary['final']:.4f}, best "
                        f"{summary['best']:.4f} at epoch {summary['best_epoch']}, {summary['seconds']:.1f} s"
                    )
                except BrokenPipeError:
                    closed.append(True)
                    engine.stop()
        elif outcome.status == "failed":
            print_line(f"portable-cnn: {outcome.run.name} failed: {outcome.error}", file=sys.stderr)

    try:
        with sweep.StopOnSignals(engine) as signals:
            outcomes = sweep.execute_all(to_do, engine, finished)
    finally:
        if bar is not None:
            bar.close()
    if closed:
        raise BrokenPipeError("the reader of the sweep's output went away")
    return outcomes, signals.signal_name


def _sweep_report(folder) -> int:
    from .sweep_report import report

    text, written, incomplete = report(folder)
    if text:
        print(text)
        print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    if incomplete:
        print(
            f"portable-cnn: {_runs(len(incomplete))} in {folder} not complete (not in the table): "
            f"{', '.join(incomplete[:5])}{' ...' if len(incomplete) > 5 else ''}",
            file=sys.stderr,
        )
    return 0


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


@contextlib.contextmanager
def _loaded_model(args):
    """The checkpoint and its model on the chosen backend, with the backend's device active."""
    saved = checkpoint.load(args.checkpoint)
    backend = get_backend(args.backend, args.device)
    with backend.activated():
        yield saved, saved.to_model(backend)


def _evaluate(args) -> int:
    from .datasets import load_mnist
    from .evaluation import confusion_of

    if args.plot:
        _check_picture_path(args.plot)
    with _loaded_model(args) as (saved, model):
        mnist = load_mnist(args.data_dir, test_size=args.test_size)
        count = len(mnist.test_images) if args.test_size is None else args.test_size
        if count > len(mnist.test_images):
            raise UserError(
                f"--test-size {count} asks for more images than the data has "
                f"({len(mnist.test_images)} in {mnist.source})"
            )
        batch_size = args.eval_batch_size or default_eval_batch(args.backend, args.device)
        result = confusion_of(model, mnist.test_images[:count], mnist.test_labels[:count], batch_size)
    if args.plot:
        from . import plots

        name = pathlib.Path(args.checkpoint).name
        size = plots.confusion(result.confusion, args.plot, title=f"{name}: test accuracy {result.accuracy:.4f}")
        print(f"wrote {args.plot} ({size[0]}x{size[1]} pixels)", file=sys.stderr)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), **result.as_dict()}))
    else:
        print(saved.describe())
        print(result.report())
    return 0


def _predict(args) -> int:
    from .digits import read_file
    from .evaluation import probabilities

    entries, batches = [], []
    with _loaded_model(args) as (saved, model):
        for name in args.files:
            try:
                digits, batch = read_file(name)
            except UserError as error:
                print(f"portable-cnn: {error}", file=sys.stderr)
                entries.append({"file": name, "error": str(error)})
                continue
            entries.extend({"file": name, "index": i if batch else None} for i in range(digits.shape[0]))
            batches.append(digits)
        if batches:  # all pictures in one call: one transfer each way
            import numpy as np

            found = iter(probabilities(model, np.concatenate(batches)))
            for entry in (entry for entry in entries if "error" not in entry):
                row = next(found)
                entry.update(
                    digit=int(row.argmax()),
                    probability=float(row.max()),
                    probabilities=[round(float(p), 6) for p in row],
                )
    if args.json:
        print(json.dumps(entries, indent=1))
    else:
        for entry in entries:
            if "error" not in entry:
                where = entry["file"] + ("" if entry["index"] is None else f"[{entry['index']}]")
                print(f"{where}: {entry['digit']} (probability {entry['probability']:.3f})")
    return 1 if any("error" in entry for entry in entries) else 0


def _check_picture_path(path) -> None:
    from .files import check_output_path
    from .plots import WHAT

    check_output_path(path, WHAT)


def _plot_kernels(args) -> int:
    from . import plots

    _check_picture_path(args.output)
    saved = checkpoint.load(args.checkpoint)
    title = f"learned kernels after {saved.epoch} epochs ({saved.recipe['name']} recipe)"
    size = plots.kernels(saved.params["kernels"], saved.model["kernel_size"], args.output, title=title)
    return _wrote(args.output, size)


def _plot_maps(args) -> int:
    from . import plots
    from .datasets import FULL_SIZES
    from .model import as_model_images

    _check_picture_path(args.output)
    if args.image is None and args.index >= FULL_SIZES["test"]:
        raise UserError(f"--index {args.index} is out of range: MNIST's test images are 0-{FULL_SIZES['test'] - 1}")
    with _loaded_model(args) as (saved, model):
        if args.image:
            from .digits import read_digits

            image = read_digits(args.image)[0]
            title = f"{pathlib.Path(args.image).name}"
        else:
            from .datasets import load_mnist

            mnist = load_mnist(args.data_dir, test_size=args.index + 1)
            if args.index >= len(mnist.test_images):
                raise UserError(f"--index {args.index} is past the last test image ({len(mnist.test_images) - 1})")
            image = mnist.test_images[args.index] / 255.0
            title = f"test image {args.index} (label {int(mnist.test_labels[args.index])})"
        images = as_model_images(image[None, ...], model.like)
        side = model.positions
        maps = to_host(model.feature_maps(images))[:, 0, :].reshape(-1, side, side)
        predicted = int(to_host(model.predict(images))[0])
    size = plots.feature_maps(image, maps, args.output, title=f"{title}: predicted {predicted}")
    return _wrote(args.output, size)


def _plot_curves(args) -> int:
    from . import plots
    from .metrics import read_metrics

    _check_picture_path(args.output)
    if args.metrics:
        rows, title = read_metrics(args.metrics), pathlib.Path(args.metrics).name
    else:
        saved = checkpoint.load(args.checkpoint)
        rows, title = saved.history, pathlib.Path(args.checkpoint).name
    size = plots.curves(rows, args.output, title=f"accuracy per epoch ({title})")
    return _wrote(args.output, size)


def _wrote(path, size) -> int:
    print(f"wrote {path} ({size[0]}x{size[1]} pixels)")
    return 0


def _export(args) -> int:
    from .export import export, format_of

    kind = format_of(args.output, args.format)
    saved = checkpoint.load(args.checkpoint)
    if kind == "onnx" and saved.dtype != "float32":
        print(f"portable-cnn: the checkpoint is {saved.dtype}; the ONNX graph is float32", file=sys.stderr)
    export(saved, args.output, kind)
    print(f"wrote {args.output} ({kind}: {saved.describe()})", file=sys.stderr)
    return 0


def _info(args) -> int:
    print(f"portable-cnn {__version__}")
    for row in describe_backends():
        if row["installed"]:
            print(f"{row['backend']:<17} {row['version']:<12} devices: {row['devices']}")
        else:
            print(f"{row['backend']:<17} {'not installed':<12} install: {row['install']}")
    print(f"data: {_describe_data(args)}")
    return 0


def _describe_data(args) -> str:
    """The data source a run with these flags would use and how many images it has (nothing downloaded)."""
    from .datasets import FULL_SIZES, find_mnist, load_mnist

    source = find_mnist(args.data_dir, train_size=args.train_size, test_size=args.test_size)
    if source.kind == "download":
        sizes = f"{FULL_SIZES['train']} training, {FULL_SIZES['test']} test images"
        return f"{source.describe()} ({sizes}), none found locally"
    mnist = load_mnist(args.data_dir, download=False, train_size=args.train_size, test_size=args.test_size)
    return f"{source.describe()}: {len(mnist.train_images)} training, {len(mnist.test_images)} test images"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:  # `portable-cnn ... | head`: end quietly, with the status of a process killed by SIGPIPE
        _drop_stdout()
        return 128 + signal.SIGPIPE
    except UserError as error:
        print(f"portable-cnn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("portable-cnn: interrupted", file=sys.stderr)
        return 130


def _drop_stdout() -> None:
    """Point stdout at the null device, so that what is left in its buffer goes nowhere, without a second error."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (a test's capture)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)
