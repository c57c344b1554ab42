"""``segresmamba models list|download|import|verify``: thin calls into ``segresmamba.weights``."""

from __future__ import annotations

import argparse

__all__ = ["run_models"]


def run_models(args: argparse.Namespace) -> int:
    from . import weights

    if args.action == "list":
        for info in weights.list_models():
            path = info.local_path()
            state = f"ready ({path})" if path else "downloadable" if info.url else "not published"
            default = " (default)" if info.default else ""
            print(f"{info.name}  task={info.task}  v{info.version}{default}  {state}")
            print(f"    {info.description}")
        _list_imported(weights.imported_models())
    elif args.action == "download":
        path = weights.download_model(args.name, progress=not args.quiet)
        print(f"downloaded {args.name}: {path}")
    elif args.action == "import":
        path = weights.import_model(args.file, args.name, overwrite=args.overwrite)
        _describe_user_task(weights.read_header(path)["task"])
        print(f"imported {args.file} as {path}")
        found = weights.version_of(path)
        if found is not None:
            print(f"version {found.version} of task {found.task}")
    elif args.action == "verify":
        found = weights.verify_model(args.model)
        print(
            f"ok: {found.path} (model {found.name or 'not in the registry'}, task {found.task}, "
            f"sha256 {found.sha256}, {found.size} bytes)"
        )
    return 0


def _list_imported(imported: list) -> None:
    """The versions of each of the user's own tasks, then imported checkpoints that are
    neither a registry model nor a version (named by hand), with their tasks."""
    from .tasks import user_tasks
    from .weights import model_versions

    own = {task.name: task for task in user_tasks()}
    versions = {name: model_versions(name) for name in own}
    listed = {found.path for found in sum(versions.values(), [])}
    for found in imported:
        if found.path in listed:
            continue
        print(f"{found.name}  task={found.task}  imported ({found.path})")
        if found.task in own:
            print(f"    your own task: {_task_line(own[found.task])}")
    for name, task in own.items():
        if versions[name]:
            count = len(versions[name])
            print(f"{name}  task={name}  imported, {count} version{'s' * (count > 1)}")
            print(f"    your own task: {_task_line(task)}")
        for found in versions[name]:
            newest = found is versions[name][-1]
            print(f"    {_version_line(found)}" + (f"  (newest: -t {name} uses it)" * newest))


def _version_line(found) -> str:
    """``NAME@K  cases=4 steps=300 dice=0.812 2026-12-07  PATH``; ``?`` where the checkpoint
    does not say (older checkpoints did not record every field)."""
    cases = "?" if found.cases is None else found.cases
    steps = "?" if found.steps is None else found.steps
    dice = "?" if found.dice is None else f"{found.dice:.3f}"
    date = (found.date or "undated")[:10]
    return f"{found.name}  cases={cases} steps={steps} dice={dice} {date}  {found.path}"


def _describe_user_task(name: str) -> None:
    from .tasks import user_tasks

    for task in user_tasks():
        if task.name == name:
            print(f"task {task.name} is registered: {_task_line(task)}")
            inputs = " ".join(f"-i {spec.name}=FILE" for spec in task.inputs)
            print(f"    segment with: segresmamba segment -t {task.name} {inputs} -o OUT.nii.gz")


def _task_line(task) -> str:
    labels = ", ".join(label.name for label in task.foreground_labels)
    inputs = ", ".join(spec.name for spec in task.inputs)
    return f"{task.title}; inputs {inputs}; labels {labels}"
