"""The ``segresmamba`` command: segment scans, collect training cases, manage models, run the demo and

Every problem a user can cause ends as one ``error: ...`` line on stderr, a documented exit
code and no output file; ``--debug`` shows the traceback. Heavy libraries are imported only by
the command that needs them, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .cli_dataset import add_dataset_command
from .errors import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    SegResMambaError,
    exit_code_for,
)

__all__ = ["EXIT_CODES", "build_parser", "exit_code_for", "main"]

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line ``error: ...`` (and exit code 2) instead of a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar or notes (errors and warnings still go to stderr)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show debug messages and full tracebacks",
    )
    return common


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where the network runs; auto = CUDA, else Apple MPS, else CPU (default auto)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="work at the task's coarser fast spacing: several times faster, less detail",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render the documentation)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="segresmamba",
        description="SegResMamba 3D medical image segmentation.",
        epilog=EPILOG,
        formatter_class=formatter,
        parents=[_common()],
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"segresmamba {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    seg = commands.add_parser(
        "segment",
        parents=[_common()],
        formatter_class=formatter,
        epilog=EPILOG,
        help="segment one case or a cohort",
        description="Segment scans with a task's model. The output format follows -o: .nii.gz, "
        ".nrrd, .seg.nrrd (3D Slicer segmentation with names, colours and terminology) or .dcm "
        "(DICOM Segmentation for PACS; needs a DICOM series input, empty segments are omitted). "
        "Several -i give one case for multi-input tasks (BraTS: FLAIR, T1, T1Gd, T2, recognised "
        "by file name; when the names do not tell, the command refuses: name each input, "
        "-i FLAIR=PATH, or add --inputs-in-order), or a cohort for single-input tasks when -o "
        "is a folder. The model loads once for all cases.",
    )
    seg.add_argument(
        "-t",
        "--task",
        required=True,
        help="task name, e.g. btcv, brats, phantom; a task of your own takes its newest model, "
        "NAME@K its version K (see models list)",
    )
    seg.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="IN",
        help="image file or DICOM series folder; repeat for more inputs or cases; NAME=PATH "
        "(e.g. T1Gd=post.nii.gz) says which input of a multi-input task it is",
    )
    seg.add_argument(
        "--inputs-in-order",
        action="store_true",
        help="multi-input tasks: take the inputs in the task's order (BraTS: FLAIR, T1, T1Gd, "
        "T2) even when their names do not identify them",
    )
    seg.add_argument(
        "--batch",
        metavar="LIST",
        help="text file with one case per line: its input paths separated by commas or tabs "
        "(relative to the list's folder); -o is then a folder",
    )
    seg.add_argument("-o", "--output", required=True, metavar="OUT", help="output file or folder")
    seg.add_argument(
        "--resample-gaps",
        action="store_true",
        help="DICOM series whose slices are not evenly spaced (a missing slice): interpolate them "
        "onto a regular grid, with a warning, instead of refusing them",
    )
    seg.add_argument(
        "--format",
        default=".nii.gz",
        choices=(".nii.gz", ".nrrd", ".seg.nrrd", "dicom-seg"),
        help="output format when -o is a folder (default .nii.gz; dicom-seg writes CASE_TASK.dcm)",
    )
    seg.add_argument(
        "--statistics",
        metavar="FILE",
        help="also write per-segment statistics of every case to FILE (.json or .csv): voxel "
        "count, volume in mL, mean/std/p5/p95 of the first input, bounding box in mm",
    )
    seg.add_argument("--model", metavar="NAME|PATH", help="registry model name or checkpoint file")
    _add_run_options(seg)
    seg.add_argument("--tta", action="store_true", help="average over mirrored copies (4x slower)")
    seg.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="sliding-window overlap between patches, 0 to <1 (default 0.25)",
    )
    seg.add_argument(
        "--sw-batch-size",
        type=int,
        default=None,
        metavar="N",
        help="windows per network call (default 4 on a GPU, 1 on the CPU)",
    )
    seg.add_argument(
        "--no-body-crop",
        dest="body_crop",
        action="store_false",
        help="CT tasks: run the sliding window over the whole volume, not only the body's box",
    )
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    seg.add_argument(
        "--progress-json",
        action="store_true",
        help="for front ends that run this command (the 3D Slicer module): progress as one JSON "
        'object per line on stderr, {"event": "progress", "case", "stage", "fraction", '
        '"elapsed_s"}, instead of the progress bar',
    )
    seg.add_argument(
        "--regions",
        action="store_true",
        help="sigmoid tasks (BraTS): write the overlapping regions (TC, WT, ET) instead of the "
        "combined labelmap",
    )
    seg.add_argument(
        "--brats-convention",
        default="2023",
        choices=("2023", "2021"),
        help="combined BraTS labelmap values: 2023 = 1 NCR, 2 ED, 3 ET; 2021 = 4 for ET",
    )
    seg.set_defaults(run=_run_segment)

    models = commands.add_parser(
        "models",
        parents=[_common()],
        formatter_class=formatter,
        epilog=EPILOG,
        help="list, download, import or verify model weights",
    )
    actions = models.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    actions.add_parser("list", parents=[_common()], help="models in the registry and their state")
    download = actions.add_parser("download", parents=[_common()], help="download a registry model")
    download.add_argument("name")
    imported = actions.add_parser(
        "import", parents=[_common()], help="import a .safetensors or .zip carried in by hand"
    )
    imported.add_argument("file")
    imported.add_argument(
        "--name",
        help="cache name (default: recognised or from the file name; models of your own task "
        "are kept as its versions NAME@1, @2, ... instead)",
    )
    imported.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different import (never needed for a new version of your own task)",
    )
    verify = actions.add_parser("verify", parents=[_common()], help="check a model end to end")
    verify.add_argument("model", metavar="NAME|PATH")
    models.set_defaults(run=_run_models)
    add_dataset_command(commands, [_common()], formatter, EPILOG, _Parser)

    demo = commands.add_parser(
        "demo",
        parents=[_common()],
        formatter_class=formatter,
        epilog=EPILOG,
        help="segment the synthetic phantom with the bundled demo model and print Dice",
    )
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="output folder")
    demo.add_argument(
        "--model",
        metavar="PATH",
        help="a phantom checkpoint to use instead of the bundled demo model",
    )
    _add_run_options(demo)
    demo.set_defaults(run=_run_demo)

    warmup = commands.add_parser(
        "warmup",
        parents=[_common()],
        formatter_class=formatter,
        epilog=EPILOG,
        help="compile the CPU kernels into numba's cache now, not at the first segmentation",
        description="Compile the numba kernels that inference uses (and training, where the "
        "training code is installed) into numba's cache (NUMBA_CACHE_DIR if set), so the first "
        "segmentation does not wait for them. Fast when the cache is already warm.",
    )
    warmup.add_argument(
        "--force", action="store_true", help="run the kernels even where a warm cache is recorded"
    )
    warmup.set_defaults(run=_run_warmup)

    bench = commands.add_parser(
        "bench", help="benchmark (arguments go to segresmamba.bench)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_run_bench)
    return parser


def _run_segment(args: argparse.Namespace) -> int:
    from .cli_segment import run_segment
    from .monai_light import import_monai_for_inference
    from .threads import configure_threads

    configure_threads()  # from the CPU affinity; SEGRESMAMBA_THREADS / _RESERVE_CORES adjust
    import_monai_for_inference()  # without SciPy, matplotlib, TensorBoard: seconds at start

    return run_segment(args)


def _run_models(args: argparse.Namespace) -> int:
    from .cli_models import run_models

    return run_models(args)


def _run_demo(args: argparse.Namespace) -> int:
    from .cli_segment import run_demo
    from .monai_light import import_monai_for_inference
    from .threads import configure_threads

    configure_threads()
    import_monai_for_inference()

    return run_demo(args)


def _run_warmup(args: argparse.Namespace) -> int:
    from .warmup import warm_up

    report = warm_up(force=args.force)
    if not args.quiet:
        print("\n".join(report.lines()))
    return 0


def _first_run_warmup(args: argparse.Namespace) -> None:
    """An installed engine (the wheel) compiles its kernels on its first segment or demo, said
    in one line, so the cost is named once instead of hiding in the first case's time. A
    warm-up that cannot run (an unwritable cache folder) is only a warning: the kernels then
    compile on first use, as without it."""
    from .warmup import needs_first_run_warmup, warm_up

    if args.command in ("segment", "demo") and needs_first_run_warmup():
        log = logging.getLogger("segresmamba")
        log.info("first run: compiling the CPU kernels once (segresmamba warmup)")
        try:
            report = warm_up()
        except SegResMambaError as error:
            log.warning("kernel warm-up skipped: %s", _one_line(error))
            return
        for line in report.lines():
            log.info("warmup: %s", line)


def _run_bench(args: argparse.Namespace) -> int:
    try:
        from .bench import main as bench_main  # lazily: it pulls in timing and peer models
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.bench":
            raise
        raise SegResMambaError(
            "the benchmark (segresmamba.bench) is not part of this installation"
        ) from None
    return int(bench_main(list(args.bench_args)) or 0)


class _NoteFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.INFO: "note", logging.DEBUG: "debug"}.get(record.levelno, "warning")
        return f"{prefix}: {record.getMessage()}"


class _TqdmHandler(logging.Handler):
    """Log lines written through tqdm, so a running progress bar is not torn apart."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _configure_logging(quiet: bool, debug: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(_NoteFormatter())
    logger = logging.getLogger("segresmamba")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see EXIT_CODES)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    flags = [a for a in argv[:2] if a in ("-q", "--quiet", "--debug")]
    bench_args = None
    if argv[len(flags) : len(flags) + 1] == ["bench"]:  # everything after it is bench's own
        argv, bench_args = argv[: len(flags) + 1], argv[len(flags) + 1 :]
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if bench_args is not None:
        args.bench_args = bench_args
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    _configure_logging(args.quiet, args.debug)
    try:
        _first_run_warmup(args)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SegResMambaError as error:
        if args.debug:
            logging.getLogger("segresmamba").exception("traceback")
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return exit_code_for(error)
    except Exception as error:
        if args.debug:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {_one_line(error)} (run with --debug "
            "for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
