"""The worker side: one measurement in a fresh process, one JSON line on stdout.

``python -m segresmamba.bench --worker forward|train|scan --model NAME --size DxHxW ...`` is what
:mod:`.runner` starts; a person never needs to. Anything else the process prints goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys


def _import_baseline() -> None:
    """Load MONAI's networks and losses in every worker, SegResMamba's too.

    The peak RSS includes the libraries a process has loaded; importing the same ones for every
    model keeps that baseline equal, so differences between models are the models'.
    """
    import monai.losses  # noqa: F401
    import monai.networks.nets  # noqa: F401


def run_worker(args: argparse.Namespace) -> int:
    """Measure what ``args.worker`` names and print the result as one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # already set by an embedding process
        torch.set_num_interop_threads(1)
    size = [s for group in args.size for s in group][0] if args.size else (96, 96, 96)
    repeats = args.repeats or 3
    # Keep stray prints (library banners, warnings) off the JSON channel.
    json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    _import_baseline()
    if args.worker == "scan":
        from .scan_bench import run_scan_benchmark

        result = run_scan_benchmark(
            length=args.scan_length,
            d=args.scan_d,
            n=args.scan_n,
            batch=args.batch,
            loop_tokens=args.scan_loop_tokens,
            repeats=repeats,
            seed=args.seed,
        )
    elif args.worker == "train":
        from .measure import measure_train

        result = measure_train(
            args.model, args.in_channels, args.out_channels, size, repeats, args.batch, args.seed
        )
    else:
        from .measure import measure_forward

        result = measure_forward(
            args.model, args.in_channels, args.out_channels, size, repeats, args.batch, args.seed
        )
    result["threads"] = torch.get_num_threads()
    json_out.write(json.dumps(result) + "\n")
    json_out.flush()
    return 0
