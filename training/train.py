"""``python -m training.train``: train SegResMamba for a task with the paper's recipe.

Examples::

    python -m training.train --task btcv --data btcv.json --out runs/btcv
    python -m training.train --task brats --data brats.json --fold 2 --out runs/brats-fold2
    python -m training.train --task phantom --out runs/phantom          # no data needed
    torchrun --nproc_per_node 4 -m training.train --task btcv --data btcv.json --out runs/btcv
    python -m training.train --task btcv --data btcv.json --out runs/btcv --resume
    python -m training.train --dataset Dataset001_Mine --out runs/mine      # plans first
    python -m training.train --dataset Dataset001_Mine --plan plan.json --fold 1 --out runs/f1
    python -m training.train --dataset Dataset001_Mine --init-from mine@2 --fold all --out runs/m3

Writes into ``--out``: ``best.safetensors`` (engine checkpoint format, best validation Dice,
with provenance), ``resume.safetensors`` (full state, no pickle), ``log.csv``, ``tensorboard/``
and ``run.json`` (the settings). Exit status (one line, no traceback) 0 when done or stopped on
purpose; 2 on bad input, always before any training starts and before anything is written into
``--out``: bad arguments, a refused ``--dataset`` (one line naming the case and the problem), a
refused plan or fold, a refused ``--resume``, a refused ``--init-from`` (a model that cannot be
found or read, or whose channels are not the dataset's); 3 when the loss became NaN or infinite
(the run stops before that step changes the weights, and keeps what it saved) or a checkpoint
cannot be used; 130 when interrupted (the message says whether a state was saved to resume
from); 1 for an unexpected problem (a bug).

With ``--dataset`` (an nnU-Net v2 folder) the run folder also gets ``plan.json``, the plan used
(``training.plan`` runs first when no ``--plan`` is given), and ``best.safetensors`` carries the
whole task and that plan in its header, ready for ``segresmamba models import`` and for
``--init-from``, which fine-tunes it (``training.finetune``). ``--progress-json`` prints one JSON
line per step for the Slicer module (``training.progress``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from segresmamba.datasets import EXIT_DATASET, DatasetError
from segresmamba.errors import EXIT_INTERRUPTED, EXIT_MODEL, SegResMambaError, exit_code_for

__all__ = ["build_parser", "main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _size(text: str) -> tuple[int, int, int]:
    parts = [int(v) for v in text.lower().split("x")]
    parts = parts * 3 if len(parts) == 1 else parts
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use N or XxYxZ")
    return tuple(parts)  # type: ignore[return-value]


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold number or 'all', got {text!r}") from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"second_tom\": false}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train SegResMamba with the paper's recipe (Appendix A) for a task; "
        "preprocessing and network come from the task registry.",
    )
    p.add_argument("--task", choices=("btcv", "brats", "spleen", "phantom"))
    p.add_argument("--data", help="datalist JSON from training.prepare (not for --task phantom)")
    own = p.add_argument_group("your own data (instead of --task)")
    own.add_argument(
        "--dataset", help="nnU-Net v2 dataset folder (dataset.json, imagesTr, labelsTr)"
    )
    own.add_argument("--plan", help="plan.json from training.plan (default: plan first)")
    own.add_argument("--memory-gb", type=float, help="memory budget when planning first")
    own.add_argument(
        "--model",
        choices=("segresmamba", "segresnet"),
        default="segresmamba",
        help="network: SegResMamba, or MONAI SegResNet as a benchmark peer (same plan)",
    )
    own.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune: start from this checkpoint file, or imported task NAME or NAME@K, with "
        "its own task and plan (length and learning rate: the plan's 'finetune' section)",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=_positive, help="training steps (overrides recipe)")
    length.add_argument("--epochs", type=_positive, help="epochs (overrides recipe)")
    p.add_argument(
        "--fold",
        type=_fold,
        help="validation fold 0-4 (BraTS datalist with folds, or --dataset); with --dataset "
        "'all': every case trains and validation runs on the training cases",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/resume.safetensors")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--batch-size", type=_positive, help="volumes per step per process")
    p.add_argument("--samples-per-volume", type=_positive, help="patches drawn from each volume")
    p.add_argument("--loss", choices=("dice", "dicece"), help="default: the recipe's")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: the recipe's)")
    p.add_argument("--val-every", type=_positive, help="validate every N steps")
    p.add_argument("--save-every", type=_positive, help="save the resume state every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch-size", type=_size, help="override the task's patch (recorded)")
    p.add_argument("--network", type=_json_object, help="override network arguments (JSON)")
    p.add_argument("--workers", type=int, help="data loader processes (default 0 CPU, 4 GPU)")
    p.add_argument("--cache-rate", type=float, help="share of cases kept preprocessed in RAM")
    p.add_argument(
        "--stop-after",
        type=_positive,
        help="stop after N steps in this run "
        "(state saved; continue with --resume), e.g. for time-limited cluster jobs",
    )
    p.add_argument(
        "--deterministic", action="store_true", help="deterministic algorithms only (slower on GPU)"
    )
    p.add_argument(
        "--threads",
        type=_positive,
        help="CPU threads for torch and the numba scan (default: the cores this process may use)",
    )
    p.add_argument(
        "--progress-json",
        action="store_true",
        help="one JSON progress line per step on stdout (for the Slicer module), no bar",
    )
    phantom = p.add_argument_group("phantom task")
    phantom.add_argument("--phantom-train", type=_positive, help="training phantoms (default 24)")
    phantom.add_argument("--phantom-val", type=_positive, help="validation phantoms (default 4)")
    phantom.add_argument(
        "--phantom-size",
        type=_size,
        default=(128, 128, 64),
        help="phantom voxels XxYxZ (default 128x128x64)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.task) == bool(args.dataset):
        parser.error("give either --task or --dataset")
    if args.dataset:
        if args.data:
            parser.error("--data is for --task; --dataset reads the folder itself")
        if args.init_from and args.plan:
            parser.error("--plan is refused with --init-from: the plan comes from the model")
        if args.init_from and args.network:
            parser.error("--network is refused with --init-from: the network is the model's")
    else:
        if args.plan or args.model != "segresmamba" or args.init_from:
            parser.error("--plan, --model and --init-from are for --dataset")
        if args.task != "phantom" and not args.data:
            parser.error(f"--data LIST.json is needed for --task {args.task}")
        if args.fold is not None and args.task != "brats":
            parser.error("--fold is for --task brats or --dataset")
        if args.fold == "all":
            parser.error("--fold all is for --dataset")
    from .finetune import InitFromError
    from .loop import TrainingStopped, train

    try:
        return train(args, argv)
    except (DatasetError, InitFromError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DATASET
    except TrainingStopped as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MODEL
    except SegResMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print(f"interrupted; {_saved_state(Path(args.out))}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _saved_state(out: Path) -> str:
    """What an interrupted run can continue from, truthfully: the last saved state, or none."""
    from .run_folder import RESUME
    from .state import read_progress

    path = out / RESUME
    try:
        step = read_progress(path)["progress"]["step"]
    except (OSError, ValueError, KeyError):
        return (
            "nothing was saved yet (the first save comes at --save-every steps): start the run "
            "again, without --resume"
        )
    return f"continue with --resume from the last saved state (step {step}, {path})"


if __name__ == "__main__":
    sys.exit(main())
