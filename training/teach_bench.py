"""``python -m training.teach_bench``: the teach loop a clinician runs, played on labelled scans.

A user segments a case with the current model, corrects the result, adds it to the training set
and fine-tunes; the next case comes out better, or does not. This benchmark plays that loop on an
nnU-Net dataset whose manual labels stand in for the corrections::

    python -m training.teach_bench --dataset ../shared/data/brats2013-2ch --start 2 \\
        --out docs/benchmarks/2026-12-07-teach-loop-cpu.json

- Round 0 trains a model from scratch on the first ``--start`` cases.
- Each following round scores the current model on the next case against its manual label (the
  "before correction" Dice), adds that case with its label through ``segresmamba dataset add``
  (the command the Slicer module's *Add to training set* shares its code with) and fine-tunes
  with ``training.train --init-from`` for the plan's ``finetune`` length.
- In the same run, for comparison, a model trained from scratch on the same cases with the same
  budget of steps (round 0's steps plus every fine-tune's so far).
- After every round each model is scored on every case not yet trained on (and on ``--holdout``
  cases, never trained on): Dice per label and whole foreground (the whole tumour for BraTS).

Every training is its own process (``training.bench_runs.run_measured``: wall time, CPU time,
peak RSS). Models are scored as they end (final weights), never picked on the cases scored.
Runs train on all their cases (``--fold all``, as the module does) and validate once, at the end.
The JSON is rewritten after every round, so a long run that is stopped keeps what it measured,
and ``--resume`` (same command) goes on from its last finished round, in the same ``--work``.
Run folders go to ``--work`` (outside the repository: weights trained on non-commercial data
must never be committed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench_runs import machine_info, run_measured
from .teach_summary import summarise

__all__ = ["TeachOptions", "main", "play"]

MODELS = ("segresmamba", "segresnet")
SCRATCH = ("every", "last", "none")


@dataclass(frozen=True)
class TeachOptions:
    """The benchmark's settings, resolved once from the command line."""

    dataset: Path
    start: int
    out: Path
    work: Path
    holdout: Path | None
    steps: int | None
    finetune_steps: int | None
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    rounds: int | None
    scratch: str
    device: str
    threads: int | None
    network: str | None
    resume: bool


def _dataset(folder: Path):
    from segresmamba.datasets import check_cases, load_dataset

    dataset = load_dataset(folder)
    check_cases(dataset)
    return dataset


def _round_count(options: TeachOptions, cases: int) -> int:
    """Rounds after round 0: without a hold-out set, one case is left unseen to score on."""
    available = cases - options.start - (0 if options.holdout else 1)
    if available < 1:
        raise SystemExit(
            f"error: {options.dataset} has {cases} cases: --start {options.start} leaves no "
            "round with a case to add and one to score"
        )
    return min(options.rounds or available, available)


def _train(
    options: TeachOptions, data: Path, run: Path, model: str, seed: int, steps: int | None,
    init_from: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One measured ``training.train --dataset`` process (all cases, one validation at the end)."""
    command = [sys.executable, "-m", "training.train", "--dataset", str(data), "--out", str(run)]
    command += ["--fold", "all", "--model", model, "--seed", str(seed), "--device", options.device]
    if steps:
        command += ["--max-steps", str(steps), "--val-every", str(steps)]
    if init_from is not None:
        command += ["--init-from", str(init_from)]
    if options.threads:
        command += ["--threads", str(options.threads)]
    if options.network and init_from is None:  # a fine-tune keeps its model's network
        command += ["--network", options.network]
    record = run_measured(command, run.with_suffix(".log"))
    if record["exit_status"] != 0:
        tail = run.with_suffix(".log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"training failed ({' '.join(command)}):\n{tail}")
    settings = json.loads((run / "run.json").read_text(encoding="utf-8"))["settings"]
    record["steps"] = int(settings["total_steps"])
    record["wall_minutes"] = round(record["wall_seconds"] / 60, 2)
    return record


def _add_case(data: Path, case, names: Sequence[str]) -> None:
    """The manual label goes in as the user's correction, through ``segresmamba dataset add``;
    ``names`` are the channels (the source dataset's, which the training set copies)."""
    command = [sys.executable, "-m", "segresmamba", "dataset", "add", str(data)]
    command += ["--case", case.case_id, "--labels", str(case.label)]
    for name, image in zip(names, case.images):
        command += ["-i", f"{name}={image}"]
    record = run_measured(command, data.parent / f"add-{case.case_id}.log")
    if record["exit_status"] != 0:
        log = (data.parent / f"add-{case.case_id}.log").read_text(encoding="utf-8")
        raise RuntimeError(f"dataset add failed for {case.case_id}: {log[-1000:]}")


def _empty_copy(source, data: Path) -> None:
    """A training set with the source's channels and labels and no case yet."""
    if data.exists():
        shutil.rmtree(data)
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    info = json.loads((source.folder / "dataset.json").read_text(encoding="utf-8"))
    info["numTraining"] = 0
    (data / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _score(run: Path, model: str, entries: Sequence[dict]) -> list[dict[str, Any]]:
    from .bench_runs import load_final_model, score_entries

    task, network = load_final_model(run, model)
    return score_entries(task, network, entries)


def _mean(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each Dice column over cases, NaN (absent structure) left out."""
    keys = [k for k in (rows[0] if rows else {}) if k != "case"]
    means: dict[str, float | None] = {}
    for key in keys:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        means[key] = round(sum(values) / len(values), 4) if values else None
    return means


def _scored(record: dict, run: Path, model: str, unseen: list, holdout: list) -> dict:
    record["unseen"] = _score(run, model, unseen) if unseen else []
    record["unseen_mean"] = _mean(record["unseen"])
    record["holdout"] = _score(run, model, holdout) if holdout else []
    record["holdout_mean"] = _mean(record["holdout"])
    return record


def _round_folder(work: Path, number: int) -> Path:
    return work / ("round0" if number == 0 else f"round{number}-finetune")


def _model_of(work: Path, rounds: list[dict[str, Any]]) -> Path:
    """The newest round's run folder: the model the next round fine-tunes (refused, one line, when
    a resumed run's folders are gone)."""
    run = _round_folder(work, len(rounds) - 1)
    if not (run / "best.safetensors").is_file():
        raise SystemExit(f"error: cannot resume: {run / 'best.safetensors'} is missing")
    return run


def _clear_unfinished(work: Path, number: int) -> None:
    """Run folders of a round that is not in the JSON were left by a stopped run: played again."""
    for run in (_round_folder(work, number), work / f"round{number}-scratch"):
        if run.exists():
            print(f"removing {run}: its round did not finish", flush=True)
            shutil.rmtree(run)


def play(options: TeachOptions, source, holdout: list[dict], played: dict[str, Any], write) -> None:
    """The loop for ``played``'s model and seed, its rounds appended to ``played["rounds"]``;
    ``write`` is called after every round. Rounds already in ``played`` (a resumed run) are kept:
    the training set is rebuilt with their cases and the loop goes on from the newest model."""
    model, seed = played["model"], played["seed"]
    work = options.work / f"{model}-seed{seed}"
    data = work / "training-set"
    cases = list(source.cases)
    rounds_after = _round_count(options, len(cases))
    done = played["rounds"]
    _empty_copy(source, data)
    for case in cases[: options.start + max(len(done) - 1, 0)]:
        _add_case(data, case, source.channel_names)
    if not done:
        _clear_unfinished(work, 0)
        first = _train(options, data, work / "round0", model, seed, options.steps)
        unseen = [c.as_entry() for c in cases[options.start :]]
        done.append(
            {
                "round": 0,
                "trained_cases": [c.case_id for c in cases[: options.start]],
                "scratch": _scored(first, work / "round0", model, unseen, holdout),
            }
        )
        write()
    current = _model_of(work, done)
    budget = sum((r.get("finetuned") or r["scratch"])["steps"] for r in done)
    for number in range(len(done), rounds_after + 1):
        added = cases[options.start + number - 1]
        previous = done[-1]
        chain = previous.get("finetuned") or previous["scratch"]
        before = next(r for r in chain["unseen"] if r["case"] == added.case_id)
        _add_case(data, added, source.channel_names)
        trained = cases[: options.start + number]
        unseen = [c.as_entry() for c in cases[options.start + number :]]
        run = _round_folder(work, number)
        _clear_unfinished(work, number)
        tuned = _train(
            options, data, run, model, seed, options.finetune_steps, current / "best.safetensors"
        )
        budget += tuned["steps"]
        entry = {
            "round": number,
            "added_case": added.case_id,
            "trained_cases": [c.case_id for c in trained],
            "before_correction": before,
            "finetuned": _scored(tuned, run, model, unseen, holdout),
        }
        last = number == rounds_after
        if options.scratch == "every" or (options.scratch == "last" and last):
            scratch_run = work / f"round{number}-scratch"
            scratch = _train(options, data, scratch_run, model, seed, budget)
            entry["scratch"] = _scored(scratch, scratch_run, model, unseen, holdout)
        done.append(entry)
        current = run
        write()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.teach_bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dataset", required=True, help="nnU-Net v2 dataset with manual labels")
    p.add_argument("--start", type=int, default=2, help="cases of round 0 (default 2)")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--holdout", help="another nnU-Net dataset: cases never trained on")
    p.add_argument("--steps", type=int, help="round 0 steps (default: the plan's)")
    p.add_argument("--finetune-steps", type=int, help="steps per fine-tune (default: the plan's)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--models", default=",".join(MODELS), help="segresmamba,segresnet")
    p.add_argument("--rounds", type=int, help="rounds after round 0 (default: all possible)")
    p.add_argument(
        "--scratch", choices=SCRATCH, default="every", help="from-scratch comparison rounds"
    )
    p.add_argument("--work", help="run folders (default: TMP/segresmamba-teach-bench)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, help="torch threads per training")
    p.add_argument("--network", help="network override passed to training (JSON), for tests")
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on from the rounds already in --out (same settings, run folders in --work)",
    )
    return p


def resolve(args: argparse.Namespace) -> TeachOptions:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise SystemExit(f"error: --models takes {', '.join(MODELS)}; got {args.models!r}")
    if args.start < 1:
        raise SystemExit("error: --start must be at least 1")
    return TeachOptions(
        dataset=Path(args.dataset),
        start=args.start,
        out=Path(args.out),
        work=Path(args.work or Path(tempfile.gettempdir()) / "segresmamba-teach-bench"),
        holdout=Path(args.holdout) if args.holdout else None,
        steps=args.steps,
        finetune_steps=args.finetune_steps,
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        models=models,
        rounds=args.rounds,
        scratch=args.scratch,
        device=args.device,
        threads=args.threads,
        network=args.network,
        resume=args.resume,
    )


def _write(result: dict[str, Any], out: Path) -> None:
    from segresmamba.io.atomic import atomic_output

    with atomic_output(out, overwrite=True) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _fresh_result(options: TeachOptions, source, argv: Sequence[str]) -> dict[str, Any]:
    return {
        "benchmark": "teach loop: segment, correct, add, fine-tune; against from scratch",
        "command": "python -m training.teach_bench " + " ".join(argv),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": machine_info(),
        "dataset": str(options.dataset.resolve()),
        "holdout": str(options.holdout.resolve()) if options.holdout else None,
        "case_order": [c.case_id for c in source.cases],
        "settings": {
            "start": options.start,
            "steps": options.steps,
            "finetune_steps": options.finetune_steps,
            "scratch": options.scratch,
            "seeds": list(options.seeds),
        },
        "runs": [],
    }


def _resumed(fresh: dict[str, Any], out: Path, argv: Sequence[str]) -> dict[str, Any]:
    """The earlier result in ``out``, when it was made with the same data and settings; the
    seeds may differ (a resumed run can add one)."""
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: cannot resume from {out}: {error}") from None
    for key in ("dataset", "holdout", "case_order"):
        if earlier.get(key) != fresh[key]:
            raise SystemExit(f"error: cannot resume from {out}: its {key} differs from this run's")
    for key, value in fresh["settings"].items():
        if key != "seeds" and earlier.get("settings", {}).get(key) != value:
            raise SystemExit(
                f"error: cannot resume from {out}: its --{key.replace('_', '-')} differs from this run's"
            )
    earlier["settings"]["seeds"] = sorted(
        set(earlier["settings"]["seeds"]) | set(fresh["settings"]["seeds"])
    )
    earlier.setdefault("resumed", []).append(
        {"command": fresh["command"], "date": fresh["date"], "machine": fresh["machine"]}
    )
    return earlier


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = resolve(build_parser().parse_args(argv))
    source = _dataset(options.dataset)
    holdout = [c.as_entry() for c in _dataset(options.holdout).cases] if options.holdout else []
    result = _fresh_result(options, source, argv)
    if options.resume:
        result = _resumed(result, options.out, argv)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    rounds_after = _round_count(options, len(source.cases))

    def write() -> None:
        result["summary"] = summarise(result["runs"])
        _write(result, options.out)

    for model in options.models:
        for seed in options.seeds:
            played = next(
                (r for r in result["runs"] if (r["model"], r["seed"]) == (model, seed)), None
            )
            if played is None:
                played = {"model": model, "seed": seed, "rounds": []}
                result["runs"].append(played)
            if len(played["rounds"]) > rounds_after:
                print(f"{model} seed {seed}: done earlier, {len(played['rounds'])} rounds")
                continue
            play(options, source, holdout, played, write)
            print(f"{model} seed {seed}: {len(played['rounds'])} rounds", flush=True)
    write()
    print(json.dumps(result["summary"], indent=2))
    print(f"-> {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
