"""Cohorts across processes, GPUs and nodes: ``segresmamba segment --batch`` under ``torchrun``
(and, with :func:`run_in_turn`, one after another in a single process).

    torchrun --nproc_per_node 4 -m segresmamba segment -t btcv --batch cases.txt -o out/

torchrun starts one process per GPU (or per CPU share) and sets RANK, LOCAL_RANK, WORLD_SIZE.
Every rank plans the same case list and takes every WORLD_SIZE-th case from its RANK, so each
case has exactly one writer and no coordination is needed while working. Each rank loads the
model once, on GPU LOCAL_RANK (or the CPU with its share of the cores). Outputs that already
exist are skipped unless ``--overwrite``, so a rerun after a crash finishes only what is missing;
each output is written atomically, so a crash never leaves a half-written file to be mistaken
for a finished one. One bad case does not stop the others; rank 0 prints the summary (done,
skipped, failed with reasons) and every rank exits non-zero when any case failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SegResMambaError, exit_code_for
from .threads import available_cores

__all__ = [
    "Outcome",
    "Rank",
    "launched_by_torchrun",
    "print_summary",
    "rank_from_env",
    "record_failure",
    "run_cohort",
    "run_in_turn",
    "shard",
]


@dataclass(frozen=True)
class Rank:
    """This process's place in the torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


@dataclass
class Outcome:
    """What one rank did: case names done and skipped, failures with their reasons."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # name, reason, exit code
    statistics: list = field(default_factory=list)


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for every worker, even with one process."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def rank_from_env() -> Rank:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return Rank(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=max(1, local_world),
    )


def shard(cases: list, rank: Rank) -> list:
    """This rank's cases: every world_size-th one from its rank (disjoint, together complete)."""
    return cases[rank.rank :: rank.world_size]


def _place(args: argparse.Namespace, rank: Rank) -> None:
    """GPU LOCAL_RANK when the run is on CUDA; otherwise this rank's share of the CPU cores."""
    import torch

    from .inference import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise SegResMambaError(
                f"rank {rank.rank} wants GPU {rank.local_rank}, but this node has "
                f"{torch.cuda.device_count()}; start fewer processes per node"
            )
        torch.cuda.set_device(rank.local_rank)
        args.device = f"cuda:{rank.local_rank}"
    elif "OMP_NUM_THREADS" not in os.environ:
        # The node's cores this process may use (its affinity), shared among the local ranks.
        torch.set_num_threads(max(1, available_cores() // rank.local_world_size))


def _gather(outcome: Outcome, rank: Rank) -> list[Outcome]:
    """Every rank's outcome on every rank (gloo: small Python objects, on CPUs and GPUs alike)."""
    if rank.world_size == 1:
        return [outcome]
    import torch.distributed as dist

    everyone: list = [None] * rank.world_size
    dist.all_gather_object(everyone, outcome)
    return everyone


def run_cohort(
    args: argparse.Namespace,
    task,
    plan: Callable,
    segment_case: Callable,
    write_statistics: Callable | None = None,
) -> int:
    """Run this rank's share of the cohort; returns the same exit code on every rank.

    ``plan(args, task)`` gives the cases (as ``cli_segment.plan_cases``); ``segment_case(args,
    task, case, model, label, statistics)`` segments one and returns the loaded model.
    """
    import torch.distributed as dist

    rank = rank_from_env()
    if rank.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    try:
        try:
            outcome = _run_share(args, task, plan, segment_case, rank)
        except SegResMambaError as error:  # still join the gather, or the other ranks would hang
            reason = " ".join(str(error).split())
            outcome = Outcome(failed=[(f"rank {rank.rank} setup", reason, exit_code_for(error))])
        everyone = _gather(outcome, rank)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    failed = [f for o in everyone for f in o.failed]
    if rank.rank == 0:
        print_summary(everyone, rank.world_size)
        rows = [row for o in everyone for row in o.statistics]
        if write_statistics is not None and getattr(args, "statistics", None) and rows:
            write_statistics(rows, args.statistics)
    return max((code for _name, _reason, code in failed), default=0)


def record_failure(outcome: Outcome, name: str, error: Exception, debug: bool = False) -> None:
    """Report one case's failure on stderr with its reason and count it in ``outcome``; an
    unexpected error (a bug) is reported the same way, with its type, so the cohort goes on."""
    reason = " ".join(str(error).split())
    if not isinstance(error, SegResMambaError):
        reason = f"unexpected {type(error).__name__}: {reason}"
        if debug:
            logging.getLogger("segresmamba").error("%s: traceback", name, exc_info=error)
    print(f"error: {name}: {reason}", file=sys.stderr, flush=True)
    outcome.failed.append((name, reason, exit_code_for(error)))


def print_summary(everyone: list[Outcome], processes: int | None = None) -> None:
    """Done, skipped and failed (with reasons) over all outcomes; ``processes`` None for a
    plain cohort, which refuses existing outputs up front instead of skipping them."""
    done = sum(len(o.done) for o in everyone)
    failed = [f for o in everyone for f in o.failed]
    if processes is None:
        print(f"summary: {done} done, {len(failed)} failed", flush=True)
    else:
        skipped = sum(len(o.skipped) for o in everyone)
        print(
            f"summary: {done} done, {skipped} skipped (output exists; --overwrite redoes them), "
            f"{len(failed)} failed ({processes} process(es))",
            flush=True,
        )
    for name, reason, _code in failed:
        print(f"failed: {name}: {reason}", flush=True)


def run_in_turn(
    args: argparse.Namespace, task, cases: list, segment_case: Callable, write_statistics: Callable
) -> int:
    """Without torchrun: the cases one after another in this process. A single case's error
    propagates; in a cohort each failure is recorded and the others go on, as under torchrun.
    Returns the exit code of the worst failed case (0 when none failed)."""
    statistics_path = getattr(args, "statistics", None)
    model = None
    outcome = Outcome()
    try:
        for number, case in enumerate(cases, start=1):
            label = case.name if len(cases) == 1 else f"[{number}/{len(cases)}] {case.name}"
            rows: list | None = [] if statistics_path else None
            started = time.perf_counter()
            try:
                model = segment_case(args, task, case, model, label, rows)
            except Exception as error:  # expected or a bug: one case must not stop the cohort
                if len(cases) == 1:
                    raise
                record_failure(outcome, case.name, error, getattr(args, "debug", False))
                continue
            _count_done(args, outcome, case, rows, started)
    finally:  # also after Ctrl+C: the finished cases' statistics are kept
        if len(cases) > 1:
            print_summary([outcome])
        if statistics_path and outcome.statistics:
            write_statistics(outcome.statistics, statistics_path)
    return max((code for _name, _reason, code in outcome.failed), default=0)


def _run_share(args, task, plan, segment_case, rank: Rank) -> Outcome:
    outcome = Outcome()
    if args.input or not args.batch:
        raise SegResMambaError("under torchrun, give the cases with --batch LIST and -o FOLDER")
    folder = Path(args.output)
    try:
        folder.mkdir(exist_ok=True)  # every rank: whoever comes first creates it
    except OSError as error:
        raise SegResMambaError(f"cannot create output folder {folder}: {error.strerror}") from None
    planning = argparse.Namespace(**{**vars(args), "overwrite": True})  # existing: skip, below
    cases = plan(planning, task)
    _place(args, rank)
    mine = shard(cases, rank)
    model = None
    for number, case in enumerate(mine, start=1):
        if case.output.exists() and not args.overwrite:
            outcome.skipped.append(case.name)
            continue
        label = f"[rank {rank.rank}: {number}/{len(mine)}] {case.name}"
        rows: list | None = [] if getattr(args, "statistics", None) else None
        started = time.perf_counter()
        try:
            model = segment_case(args, task, case, model, label, rows)
        except Exception as error:  # expected or a bug: one case must not stop the cohort
            record_failure(outcome, case.name, error, getattr(args, "debug", False))
            continue
        _count_done(args, outcome, case, rows, started)
    return outcome


def _count_done(args: argparse.Namespace, outcome: Outcome, case, rows, started: float) -> None:
    """A written case is counted, then announced: a Ctrl+C after the "wrote" line still finds
    the case, and its statistics, in the summary."""
    outcome.statistics += rows or []
    outcome.done.append(case.name)
    if not args.quiet:
        print(f"{case.name}: wrote {case.output} ({time.perf_counter() - started:.1f} s)")
