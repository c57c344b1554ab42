"""Command-line options of ``segresmamba bench``, and the settings a run resolves them to."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from .models import DEFAULT_MODELS, MODELS, parse_models
from .scan_bench import DEFAULT_D, DEFAULT_LENGTH, DEFAULT_LOOP_TOKENS, DEFAULT_N

QUICK = {"sizes": [(64, 64, 64)], "repeats": 1, "scan_length": 16_384, "scan_loop_tokens": 1024}
"""``--quick``: a smoke configuration for tests; options given explicitly still win."""

WORKER_KINDS = ("forward", "train", "scan")


def parse_size(text: str) -> list[tuple[int, int, int]]:
    """``"96"`` -> [(96, 96, 96)]; ``"96x96x64"`` -> [(96, 96, 64)]; commas separate sizes."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            dims = tuple(int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {part!r}: use N or DxHxW") from None
        if len(dims) == 1:
            dims = dims * 3
        if len(dims) != 3 or min(dims) <= 0:
            raise argparse.ArgumentTypeError(f"bad size {part!r}: use N or DxHxW, positive")
        sizes.append(dims)
    if not sizes:
        raise argparse.ArgumentTypeError("empty size")
    return sizes


def _models(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    try:
        return parse_models(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line ``error: ...`` (exit code 2) instead of a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser(prog: str = "segresmamba bench") -> argparse.ArgumentParser:
    """The benchmark's options; ``--worker`` is internal (one model in a fresh process)."""
    p = _Parser(
        prog=prog,
        description=(
            "CPU benchmark of SegResMamba and its peers: parameters, MACs, forward time and peak "
            "RSS (each model in its own fresh process), optionally one training step and the "
            "selective-scan micro-benchmark. Writes docs/benchmarks/<date>-cpu[-suffix].json and "
            "regenerates the table in docs/benchmarks.md."
        ),
    )
    p.add_argument(
        "--models",
        type=_models,
        default=None,
        help=f"comma-separated subset of {', '.join(MODELS)}; 'all' or 'none' "
        f"(default {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        action="append",
        default=None,
        help="input size N (N³) or DxHxW; repeat or comma-separate for several (default 96)",
    )
    p.add_argument("--in-channels", type=_positive, default=1)
    p.add_argument("--out-channels", type=_positive, default=14)
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--threads", type=_positive, default=2, help="torch threads (default 2)")
    p.add_argument(
        "--repeats", type=_positive, default=None, help="timed runs after 1 warm-up (default 3)"
    )
    p.add_argument(
        "--rounds",
        type=_positive,
        default=1,
        help="alternating rounds: every model measured once per round, each time in a fresh "
        "process, in a rotating order; figures are medians over rounds (default 1)",
    )
    p.add_argument("--train", action="store_true", help="also time one training step per model")
    p.add_argument(
        "--scan", action="store_true", help="also run the scan micro-benchmark (torch vs loop)"
    )
    p.add_argument(
        "--scan-length", type=_positive, default=None, help=f"(default {DEFAULT_LENGTH})"
    )
    p.add_argument("--scan-d", type=_positive, default=DEFAULT_D)
    p.add_argument("--scan-n", type=_positive, default=DEFAULT_N)
    p.add_argument(
        "--scan-loop-tokens",
        type=_positive,
        default=None,
        help=f"tokens the per-token loop is timed on, then scaled (default {DEFAULT_LOOP_TOKENS})",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke configuration: 64³, 1 repeat, short scan"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="GPU mode: training peak memory and step time at the largest --size, inference per "
        "patch at each --size in fp32 and bf16, SegResMamba once per scan backend; writes "
        "docs/benchmarks/<date>-gpu.json (cpu rehearses the same run, default sizes 96,128)",
    )
    p.add_argument(
        "--timeout", type=float, default=0, help="seconds per model process (0: no limit)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--out-json", default=None, help="write the JSON here instead of docs/")
    out.add_argument("--no-write", action="store_true", help="leave docs/ untouched")
    out.add_argument("--suffix", default="", help="docs/benchmarks/<date>-cpu-<suffix>.json")
    out.add_argument("--docs-dir", default=None, help="the docs folder (default: the repo's)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    p.add_argument("--worker", choices=WORKER_KINDS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    return p


@dataclass
class Settings:
    """A run's resolved options (quick defaults applied)."""

    models: list[str]
    sizes: list[tuple[int, int, int]]
    in_channels: int
    out_channels: int
    batch: int
    threads: int
    repeats: int
    rounds: int
    train: bool
    scan: bool
    scan_length: int
    scan_d: int
    scan_n: int
    scan_loop_tokens: int
    quick: bool
    seed: int
    timeout: float

    def as_json(self) -> dict:
        """The settings as the report stores them."""
        return {
            "models": self.models,
            "sizes": [list(s) for s in self.sizes],
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "batch": self.batch,
            "threads": self.threads,
            "repeats": self.repeats,
            "rounds": self.rounds,
            "warmup": 1,
            "statistic": "median",
            "train": self.train,
            "scan": self.scan,
            "quick": self.quick,
            "seed": self.seed,
        }


def resolve(args: argparse.Namespace) -> Settings:
    """Apply the ``--quick`` and plain defaults to whatever was not given explicitly."""
    quick = args.quick
    sizes = [s for group in args.size for s in group] if args.size else None
    return Settings(
        models=args.models if args.models is not None else list(DEFAULT_MODELS),
        sizes=list(dict.fromkeys(sizes or (QUICK["sizes"] if quick else [(96, 96, 96)]))),
        in_channels=args.in_channels,
        out_channels=args.out_channels,
        batch=args.batch,
        threads=args.threads,
        repeats=args.repeats or (QUICK["repeats"] if quick else 3),
        rounds=args.rounds,
        train=args.train,
        scan=args.scan,
        scan_length=args.scan_length or (QUICK["scan_length"] if quick else DEFAULT_LENGTH),
        scan_d=args.scan_d,
        scan_n=args.scan_n,
        scan_loop_tokens=args.scan_loop_tokens
        or (QUICK["scan_loop_tokens"] if quick else DEFAULT_LOOP_TOKENS),
        quick=quick,
        seed=args.seed,
        timeout=args.timeout,
    )


def worker_argv(
    settings: Settings, kind: str, model: str | None, size: Sequence[int] | None
) -> list[str]:
    """The arguments that make a fresh process measure one thing with these settings."""
    argv = [
        "--worker",
        kind,
        "--in-channels",
        str(settings.in_channels),
        "--out-channels",
        str(settings.out_channels),
        "--batch",
        str(settings.batch),
        "--threads",
        str(settings.threads),
        "--repeats",
        str(settings.repeats),
        "--seed",
        str(settings.seed),
        "--scan-length",
        str(settings.scan_length),
        "--scan-d",
        str(settings.scan_d),
        "--scan-n",
        str(settings.scan_n),
        "--scan-loop-tokens",
        str(settings.scan_loop_tokens),
    ]
    if model is not None:
        argv += ["--model", model]
    if size is not None:
        argv += ["--size", "x".join(str(s) for s in size)]
    return argv
