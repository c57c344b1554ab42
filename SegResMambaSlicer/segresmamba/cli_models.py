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
    elif args.action == "verify":
        found = weights.verify_model(args.model)
        print(
            f"ok: {found.path} (model {found.name or 'not in the registry'}, task {found.task}, "
            f"sha256 {found.sha256}, {found.size} bytes)"
        )
    return 0


def _list_imported(imported: list) -> None:
    """Imported checkpoints that the registry does not list, with their user tasks."""
    from .tasks import user_tasks

    own = {task.name: task for task in user_tasks()}
    for found in imported:
        kind = "your own task" if found.task in own else "task"
        print(f"{found.name}  task={found.task}  imported ({found.path})")
        task = own.get(found.task)
        if task is not None:
            print(f"    {kind}: {_task_line(task)}")


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
