"""The training loop behind ``python -m training.train``: one step-based loop for every task.

Steps, not epochs, are the unit (the paper's BTCV recipe counts steps; epoch recipes are turned
into steps once the training list is known), so validation, checkpoints and resume points all
fall on step numbers. The cosine schedule anneals over the whole run.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segresmamba.errors import SegResMambaError
from segresmamba.network import SegResMamba
from segresmamba.tasks import Task, get_task
from segresmamba.threads import ENV_THREADS, configure_threads
from segresmamba.weights import make_header, save_checkpoint

from .data import (
    SeededDataset,
    SeededSampler,
    fill_batch,
    make_loader,
    registry_split,
    validation_dataset,
)
from .distributed import Distributed, replica_digests, setup, teardown, wrap
from .losses import make_loss
from .progress import StepReport
from .recipes import (
    Recipe,
    get_recipe,
)
from .run_folder import (
    BEST,
    RESUME,
    TrainingStopped,
    check_resume,
    diverged_message,
    duration,
    open_run,
    plan_digest,
    refuse_wrong_resume,
)
from .runlog import RunLog, command_line, git_commit, utc_now, write_run_info
from .state import load_state, save_state
from .transforms import deterministic_transforms, random_transforms
from .validation import class_names, validate

__all__ = ["TrainingStopped", "train"]


def train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run (or resume) training as ``args`` says; returns the exit status."""
    place = setup(args.device)
    try:
        return _train(args, argv, place)
    finally:
        teardown()


def _settings(
    args: argparse.Namespace, task: Task, recipe: Recipe, place: Distributed, own: Any = None
) -> dict[str, Any]:
    data = getattr(args, "dataset", None) or args.data
    parent = own.parent if own is not None else None
    return {
        "task": task.name,
        # None for the registry tasks, so their older resume states still match
        "model": getattr(args, "model", "segresmamba") if getattr(args, "dataset", None) else None,
        "data": str(Path(data).resolve()) if data else None,
        "fold": args.fold,
        "seed": args.seed,
        "lr": args.lr if args.lr is not None else recipe.learning_rate,
        "weight_decay": recipe.weight_decay,
        "loss": args.loss or recipe.loss,
        "batch_size": args.batch_size or recipe.batch_size,
        "samples_per_volume": args.samples_per_volume or recipe.samples_per_volume,
        "patch_size": list(args.patch_size or task.patch_size),
        "network": {**task.network, **(args.network or {})},
        "world_size": place.world_size,
        "recipe": recipe.as_dict(),
        "ignore_value": own.dataset.ignore_value if own is not None else None,
        "init_from": parent.record() if parent is not None else None,
        "plan_sha256": plan_digest(own.plan) if own is not None else None,
    }


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _prepare(args: argparse.Namespace, place: Distributed) -> tuple[Task, Recipe, Any]:
    """(task, recipe, OwnRun or None); a user's dataset is checked and planned (or its --plan
    or --init-from model read) here, before anything is written."""
    if getattr(args, "dataset", None):
        from .own_data import own_setup

        run = own_setup(args, place.device)
        if args.fold is None:
            args.fold = 0
        return run.task, run.recipe, run
    task = get_task(args.task)
    return task, get_recipe(task.name), None


def _seed(args: argparse.Namespace, place: Distributed) -> None:
    """Threads and seeds, before the network is built (its initial weights follow the seed)."""
    # torch's and numba's pools alike: the numba scan's parallel kernels sum per thread, so a
    # run is repeatable (and resumes bit for bit) only at the thread count it started with; in
    # Slicer's child the engine's reserve leaves a core to the interface
    configure_threads(
        environ={**os.environ, ENV_THREADS: str(args.threads)} if args.threads else None
    )
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    if place.device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)


def _save_best(
    path: Path,
    model: torch.nn.Module,
    task: Task,
    settings: dict[str, Any],
    provenance: dict[str, Any],
    own: Any,
    summary: dict[str, Any],
) -> None:
    """best.safetensors: SegResMamba in the engine's format, its header carrying the plan
    used (so ``--init-from`` can fine-tune it); SegResNet in the peer format."""
    if own is not None:
        from .finetune import trained_cases

        provenance["split_cases"] = {
            "training": summary["training_case_ids"],
            "validation": summary["validation_case_ids"],
        }
        cases = trained_cases(own.parent, summary["dataset"], summary["training_case_ids"])
        provenance.update(cases=len(cases), trained_cases=cases)
        if own.parent is not None:
            provenance["init_from"] = own.parent.record()
        if settings["model"] == "segresnet":
            from .own_data import save_peer

            save_peer(path, model, task, provenance, own.plan)
            return
    header = make_header(task, settings["network"], provenance)
    if own is not None:
        header["plan"] = own.plan
    save_checkpoint(path, model, header, overwrite=True)


def _train(args: argparse.Namespace, argv: Sequence[str], place: Distributed) -> int:
    out = Path(args.out)
    refuse_wrong_resume(args, out)
    task, recipe, own = _prepare(args, place)
    settings = _settings(args, task, recipe, place, own)
    resume_path = out / RESUME
    _seed(args, place)  # nothing is written into --out until every check has passed

    if own is not None:
        from .own_data import own_split

        training, validation, summary = own_split(own.plan, own.dataset, args.fold)
    else:
        training, validation, summary = registry_split(args, task, out, place)
    patch = tuple(settings["patch_size"])
    workers = (
        args.workers if args.workers is not None else (4 if place.device.type == "cuda" else 0)
    )
    cache_rate = (
        args.cache_rate if args.cache_rate is not None else (0.0 if task.name == "brats" else 1.0)
    )
    own_data = own is not None
    # a user's first case or two still fill a batch: each epoch then shows a case twice
    training = fill_batch(training, settings["batch_size"] * place.world_size)
    ignore = settings["ignore_value"]  # unlabelled voxels: no loss, no Dice
    train_data = SeededDataset(
        training,
        deterministic_transforms(task, recipe.crop_foreground, own_data, ignore),
        random_transforms(
            task, replace(recipe, samples_per_volume=settings["samples_per_volume"]), patch, ignore
        ),
        cache_rate=cache_rate,
    )
    sampler = SeededSampler(train_data, args.seed, place.world_size, place.rank)
    batch_size = settings["batch_size"]
    loader = make_loader(train_data, sampler, batch_size, workers)
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch < 1:
        raise SegResMambaError(
            f"{len(training)} training case(s) cannot fill a batch of {batch_size} on "
            f"{place.world_size} process(es)"
        )
    epochs = args.epochs or (0 if args.max_steps else recipe.epochs)
    total = epochs * steps_per_epoch if epochs else (args.max_steps or recipe.steps)
    settings["total_steps"] = total
    val_every = args.val_every or recipe.val_every or steps_per_epoch
    save_every = args.save_every or val_every
    # No foreground crop: validation sees the whole scan, as segment() does for users.
    val_cases = validation_dataset(
        validation,
        deterministic_transforms(task, False, own_data, ignore),
        cache_rate,
    )

    if own is not None:
        from .own_data import own_model

        model = own_model(own, settings["model"], settings["network"]).to(place.device)
    else:
        model = SegResMamba(**{**task.network_kwargs(), **settings["network"]}).to(place.device)
    ddp_model = wrap(model, place)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=recipe.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    amp = place.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = make_loss(task, settings["loss"], ignore)

    progress: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "position": 0,
        "best_dice": -1.0,
        "best_step": 0,
        "seconds": 0.0,
        "settings": settings,
    }
    if args.resume:
        check_resume(resume_path, settings)
        progress = load_state(resume_path, model, optimizer, scheduler, scaler, place.device)
    open_run(out, own, place)
    names = class_names(task)
    commit = git_commit()  # the code that runs: taken now, not when a checkpoint is saved
    columns = ["step", "epoch", "loss", "lr", "seconds", "val_mean"] + [f"val_{n}" for n in names]
    log = RunLog(out, columns, place.main, progress["step"] if args.resume else None)
    # With no held-out case the highest Dice on the training cases picks the most overfitted
    # weights, not the best model: the newest validated weights are kept instead.
    newest_wins = summary.get("validation_on") == "training cases"
    if place.main:
        run_info = {
            "command": command_line("training.train", argv),
            "date": utc_now(),
            "commit": commit,
            "device": str(place.device),
            **summary,
            "steps_per_epoch": steps_per_epoch,
            "settings": settings,
            "notes": own.notes if own is not None else [],
        }
        write_run_info(out, run_info)
        print(
            f"training {task.name}: {summary['training_cases']} training / "
            f"{summary['validation_cases']} validation cases, {total} steps "
            f"({steps_per_epoch} per epoch), validation every {val_every}, on {place.device} "
            f"x{place.world_size}",
            flush=True,
        )
        if newest_wins:
            print(
                "--fold all: every case trains; validation runs on the training cases, so "
                "best.safetensors holds the newest validated weights, not the highest Dice"
            )

    def save_best(dice: dict[str, float]) -> None:
        provenance = {
            "dataset": summary["dataset"],
            "split": summary["split"],
            "steps": progress["step"],
            "dice": dice["mean"],
            "dice_per_class": {n: dice[n] for n in names},
            "commit": commit,
            "date": utc_now(),
            "command": command_line("training.train", argv),
            "seed": args.seed,
            "device": f"{place.device} x{place.world_size}",
            "training_hours": round(progress["seconds"] / 3600, 4),
            "recipe": recipe.source,
            "settings": {k: v for k, v in settings.items() if k != "recipe"},
        }
        _save_best(out / BEST, model, task, settings, provenance, own, summary)

    start_step, started = progress["step"], time.perf_counter() - progress["seconds"]
    report = StepReport(
        json_lines=bool(getattr(args, "progress_json", False)),
        enabled=place.main,
        total=total,
        initial=start_step,
        title=f"train {task.name}",
        dice_on=summary.get("validation_on", "validation"),
    )
    model.train()
    stop, diverged, saved_step = False, None, progress["step"] if args.resume else None
    while progress["step"] < total and not stop:
        sampler.set_epoch(progress["epoch"])
        sampler.skip(progress["position"] * batch_size)
        for batch in loader:
            image = _plain(batch["image"]).to(place.device, non_blocking=True)
            label = _plain(batch["label"]).to(place.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                loss = loss_fn(ddp_model(image), label)
            loss_value = loss.detach().float()
            if place.active:  # a NaN on one process reaches every process: all stop together
                torch.distributed.all_reduce(loss_value)
                loss_value /= place.world_size
            if not torch.isfinite(loss_value):  # before this step can change the weights
                diverged, stop = float(loss_value), True
                break
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            progress["step"] += 1
            progress["position"] += 1
            progress["seconds"] = time.perf_counter() - started
            step = progress["step"]
            row = {
                "step": step,
                "epoch": progress["epoch"],
                "loss": float(loss_value),
                "lr": lr,
                "seconds": round(progress["seconds"], 2),
            }
            log.scalars(step, {"train/loss": row["loss"], "train/lr": lr})
            if step % val_every == 0 or step == total:
                dice = validate(model, val_cases, task, patch, place, ignore_value=ignore)
                row.update({"val_mean": dice["mean"], **{f"val_{n}": dice[n] for n in names}})
                log.scalars(step, {f"val/{k}": v for k, v in dice.items() if not math.isnan(v)})
                report.validated(step, dice, names)
                if newest_wins or dice["mean"] > progress["best_dice"]:
                    progress.update(best_dice=dice["mean"], best_step=step)
                    if place.main:
                        save_best(dice)
            report.step(step, row["loss"], time.perf_counter() - started, progress["best_dice"])
            log.row(row)
            stop = bool(args.stop_after and step - start_step >= args.stop_after)
            if step % save_every == 0 or step == total or stop:
                if place.main:
                    save_state(out / RESUME, model, optimizer, scheduler, scaler, progress)
                saved_step = step
                place.barrier()
            if step >= total or stop:
                break
        else:
            progress["epoch"] += 1
            progress["position"] = 0
    report.close()
    log.close()
    if diverged is not None:
        if place.main:
            run_info["finished"] = {"step": progress["step"], "date": utc_now(), "stopped": "loss"}
            write_run_info(out, run_info)
        raise TrainingStopped(diverged_message(out, diverged, progress, saved_step))
    digests = replica_digests(model, place)
    if place.main:
        run_info["finished"] = {
            "step": progress["step"],
            "date": utc_now(),
            "pid": os.getpid(),
            "replica_weight_digests": digests,
        }
        write_run_info(out, run_info)
        if len(set(digests)) != 1:
            raise SegResMambaError(f"the {len(digests)} replicas' weights differ after training")
        if stop and progress["step"] < total:
            print(
                f"stopped at step {progress['step']} of {total}; continue with --resume", flush=True
            )
        else:
            print(
                f"done: {total} steps in {duration(progress['seconds'])}; "
                f"{'newest' if newest_wins else 'best'} validation mean Dice "
                f"{progress['best_dice']:.4f} at step {progress['best_step']} -> "
                f"{out / BEST}",
                flush=True,
            )
    return 0
