"""The ``segresmamba bench`` command: resolve the options, run the measurements in fresh
processes (or, with the internal ``--worker``, one of them), write the JSON and the docs table."""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _command(argv: Sequence[str]) -> str:
    """The command line as a person would type it again."""
    launched = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if launched.name == "__main__.py" and launched.parent.name == "bench":
        prefix = "python -m segresmamba.bench"
    else:
        prefix = "segresmamba bench"
    return " ".join([prefix, shlex.join(list(argv))]).strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with the internal ``--worker``, one measurement); exit status."""
    from .options import build_parser, resolve

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker != "scan" and not args.model:
            parser.error("--worker forward/train needs --model")
        from .worker import run_worker

        return run_worker(args)

    if args.device:
        return _gpu_main(args, argv)

    from .models import REFERENCE_MODEL, check_size
    from .report import (
        device_info,
        json_path,
        regenerate_markdown,
        render_run,
        repo_docs_dir,
        write_json,
    )
    from .runner import log, run_models, run_scan

    settings = resolve(args)
    if not settings.models and not settings.scan:
        parser.error("nothing to measure: --models none without --scan")
    for name in settings.models:
        for size in settings.sizes:
            try:
                check_size(name, size)
            except ValueError as error:
                parser.error(str(error))

    date = datetime.date.today().isoformat()
    docs_dir = Path(args.docs_dir) if args.docs_dir else repo_docs_dir()
    if args.out_json:
        target = Path(args.out_json)
    else:
        target = None if args.no_write else json_path(docs_dir, date, args.suffix)
    if target is not None and target.exists() and not args.overwrite:
        print(f"error: {target} exists; use --suffix, --out-json or --overwrite", file=sys.stderr)
        return 2

    run = {
        "format": "segresmamba-bench",
        "format_version": 1,
        "date": date,
        "command": _command(argv),
        "argv": argv,
        "device": device_info(settings.threads),
        "settings": settings.as_json(),
        "ratio_reference": REFERENCE_MODEL,
    }
    log(
        f"{len(settings.models)} model(s) x {len(settings.sizes)} size(s), median of "
        f"{settings.repeats}, {settings.threads} threads, each in a fresh process"
        + (f", {settings.rounds} alternating rounds" if settings.rounds > 1 else "")
    )
    run["results"] = run_models(settings)
    if settings.scan:
        run["scan"] = run_scan(settings)
    try:
        run["device"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    failures = sum(1 for r in run["results"] if r.get("errors")) + int(
        "error" in run.get("scan", {})
    )
    run["failures"] = failures

    link = None
    if target is not None:
        write_json(target, run, overwrite=args.overwrite)
        log(f"wrote {target}")
        in_docs = target.resolve().parent == (docs_dir / "benchmarks").resolve()
        if in_docs and not args.no_write:
            log(f"updated {regenerate_markdown(docs_dir)}")
            link = target.resolve().relative_to(docs_dir.resolve()).as_posix()
    print(render_run(run, link))
    return 1 if failures else 0


def _gpu_main(args, argv: list[str]) -> int:
    """``--device cuda|cpu``: the GPU figures (see :mod:`.gpu`); 1 when any model failed."""
    from .gpu import GPU_DEFAULT_SIZES, GPU_MODELS, run_gpu_bench
    from .report import repo_docs_dir

    sizes = [s for group in args.size for s in group] if args.size else GPU_DEFAULT_SIZES
    docs_dir = Path(args.docs_dir) if args.docs_dir else repo_docs_dir()
    date = datetime.date.today().isoformat()
    if args.out_json:
        target = Path(args.out_json)
    else:
        suffix = f"-{args.suffix}" if args.suffix else ""
        target = None if args.no_write else docs_dir / "benchmarks" / f"{date}-gpu{suffix}.json"
    if target is not None and target.exists() and not args.overwrite:
        print(f"error: {target} exists; use --suffix, --out-json or --overwrite", file=sys.stderr)
        return 2
    try:
        run = run_gpu_bench(
            args.device,
            args.models if args.models is not None else list(GPU_MODELS),
            sizes,
            target,
            _command(argv),
            repeats=args.repeats or 3,
            in_channels=args.in_channels,
            out_channels=args.out_channels,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if any("error" in r for r in run["results"]) else 0
