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
    elif args.action == "download":
        path = weights.download_model(args.name, progress=not args.quiet)
        print(f"downloaded {args.name}: {path}")
    elif args.action == "import":
        path = weights.import_model(args.file, args.name, overwrite=args.overwrite)
        print(f"imported {args.file} as {path}")
    elif args.action == "verify":
        found = weights.verify_model(args.model)
        print(
            f"ok: {found.path} (model {found.name or 'not in the registry'}, task {found.task}, "
            f"sha256 {found.sha256}, {found.size} bytes)"
        )
    return 0
