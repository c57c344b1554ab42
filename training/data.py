"""Datalists, datasets and the sampler that makes every patch reproducible from (seed, epoch, i).

Why a custom sampler: an exact ``--resume`` needs the same patches after a restart. Instead of
saving the random state of every transform in every worker, each sample's augmentation is
seeded from (seed, epoch, dataset index), and the sampler can start part-way into an epoch. The
data then depend only on the seed and the position, whatever the number of workers or GPUs.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.transforms import Compose
from torch.utils.data import Dataset, DistributedSampler

from segresmamba.errors import SegResMambaError
from segresmamba.io import write_image, write_labelmap
from segresmamba.phantom import make_phantom
from segresmamba.tasks import Task

from .distributed import Distributed
from .recipes import PHANTOM_TRAIN_SEEDS, PHANTOM_VALIDATION_SEEDS, phantom_seeds

__all__ = [
    "SeededDataset",
    "SeededSampler",
    "fill_batch",
    "item_seed",
    "load_datalist",
    "make_loader",
    "registry_split",
    "write_phantom_datalist",
]


def load_datalist(path: str | Path, split: str) -> list[dict[str, Any]]:
    """The ``split`` entries of a datalist written by ``training.prepare`` (or by hand).

    Relative paths are taken relative to the datalist's folder, as MONAI's
    ``load_decathlon_datalist`` does. Raises SegResMambaError with a one-line reason.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegResMambaError(
            f"datalist {path} does not exist; make it with training.prepare"
        ) from None
    except (OSError, ValueError) as error:
        raise SegResMambaError(f"datalist {path} cannot be read: {error}") from None
    entries = data.get(split) if isinstance(data, dict) else None
    if not entries:
        raise SegResMambaError(f"datalist {path} has no {split!r} cases")

    def resolve(value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            return [str(resolve(v)) for v in value]
        return str(value if Path(value).is_absolute() else path.parent / value)

    return [{**e, "image": resolve(e["image"]), "label": resolve(e["label"])} for e in entries]


def write_phantom_datalist(
    folder: Path,
    task: Task,
    train_seeds: Sequence[int],
    validation_seeds: Sequence[int],
    size: Sequence[int] = (128, 128, 64),
) -> Path:
    """Generate the phantom cases as NIfTI files plus a datalist, once; later calls reuse them.

    Going through files keeps one data pipeline for every task (``LoadImaged`` and all). The
    datalist records the seeds and size, and is rewritten only when they change.
    """
    folder.mkdir(parents=True, exist_ok=True)
    datalist_path = folder / "datalist.json"
    meta = {"train_seeds": list(train_seeds), "validation_seeds": list(validation_seeds)}
    meta["size"] = [int(s) for s in size]
    if datalist_path.is_file():
        existing = json.loads(datalist_path.read_text(encoding="utf-8"))
        if existing.get("phantom") == meta:
            return datalist_path
    datalist: dict[str, Any] = {
        "task": task.name,
        "split": f"phantom seeds: train {_seed_range(train_seeds)}, "
        f"validation {_seed_range(validation_seeds)}, size {'x'.join(map(str, meta['size']))}",
        "phantom": meta,
    }
    for split, seeds in (("training", train_seeds), ("validation", validation_seeds)):
        datalist[split] = []
        for seed in seeds:
            ct, truth = make_phantom(seed, size=size)
            image = write_image(ct, folder / f"phantom{seed:06d}_ct.nii.gz", overwrite=True)
            label = write_labelmap(
                truth, folder / f"phantom{seed:06d}_label.nii.gz", task, overwrite=True
            )
            datalist[split].append({"case": f"phantom{seed:06d}", "image": image.name})
            datalist[split][-1]["label"] = label.name
    temporary = datalist_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(datalist, indent=2) + "\n", encoding="utf-8")
    temporary.replace(datalist_path)
    return datalist_path


def _seed_range(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` (independent streams)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededDataset(Dataset):
    """Cached deterministic preprocessing, then random transforms seeded per (epoch, item).

    ``__getitem__`` takes ``(index, seed)`` pairs from :class:`SeededSampler`.
    """

    def __init__(
        self,
        entries: Sequence[dict],
        deterministic: Sequence,
        random: Compose,
        cache_rate: float = 1.0,
        num_workers: int = 0,
    ) -> None:
        self.cached = CacheDataset(
            list(entries),
            transform=Compose(list(deterministic)),
            cache_rate=cache_rate,
            num_workers=num_workers or None,
            progress=False,
        )
        self.random = random

    def __len__(self) -> int:
        return len(self.cached)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        item = copy.deepcopy(self.cached[index])
        self.random.set_random_state(seed=seed)
        return self.random(item)


class SeededSampler(DistributedSampler):
    """DistributedSampler that yields ``(index, augmentation seed)`` and can resume mid-epoch.

    Without a process group it is a plain shuffling sampler (one replica, rank 0). Call
    ``set_epoch`` each epoch and ``skip_batches`` once after a resume.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._skip = 0

    def skip(self, samples: int) -> None:
        """Leave out the first ``samples`` samples of the current epoch (next iteration only)."""
        self._skip = int(samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        for index in indices[skip:]:
            yield index, item_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.num_samples


def make_loader(
    dataset: SeededDataset, sampler: SeededSampler, batch_size: int, workers: int
) -> DataLoader:
    """A loader over (index, seed) keys; patches of one batch are concatenated (MONAI collate)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        drop_last=True,
    )


def validation_dataset(
    entries: Sequence[dict], deterministic: Sequence, cache_rate: float = 1.0
) -> CacheDataset:
    """Validation cases, preprocessed once and kept in RAM up to ``cache_rate`` (BraTS folds
    are too large to keep: 250 cases x 4 sequences at 1 mm)."""
    return CacheDataset(
        list(entries),
        transform=Compose(list(deterministic)),
        cache_rate=cache_rate,
        progress=False,
    )


def registry_split(args: argparse.Namespace, task: Task, out: Path, place: Distributed):
    """(training entries, validation entries, datalist summary) of a registry task's run: the
    phantom's generated cases, or the datalist's split (``--fold`` K of a BraTS datalist)."""
    if task.name == "phantom":
        folder = out / "phantom-data"
        train_seeds = phantom_seeds(PHANTOM_TRAIN_SEEDS, args.phantom_train)
        val_seeds = phantom_seeds(PHANTOM_VALIDATION_SEEDS, args.phantom_val)
        if place.main:
            write_phantom_datalist(folder, task, train_seeds, val_seeds, args.phantom_size)
        place.barrier()
        path = folder / "datalist.json"
    else:
        path = Path(args.data)
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if args.fold is not None:
        cases = info.get("cases")
        if not cases or "fold" not in cases[0]:
            raise SegResMambaError(
                f"{path} has no folds; make it with training.prepare --task brats"
            )
        folds = sorted({c["fold"] for c in cases})
        if args.fold not in folds:
            raise SegResMambaError(f"fold {args.fold} is not in {path} (folds {folds})")
        base = path.parent
        fix = [
            {
                **c,
                "image": [str(base / i) if not Path(i).is_absolute() else i for i in c["image"]],
                "label": c["label"] if Path(c["label"]).is_absolute() else str(base / c["label"]),
            }
            for c in cases
        ]
        training = [c for c in fix if c["fold"] != args.fold]
        validation = [c for c in fix if c["fold"] == args.fold]
        split = f"{info.get('split', '5 folds')}; validation fold {args.fold}"
    else:
        training, validation = load_datalist(path, "training"), load_datalist(path, "validation")
        split = info.get("split", f"{path.name}: training / validation")
    summary = {
        "datalist": str(path),
        "split": split,
        "training_cases": len(training),
        "validation_cases": len(validation),
        "dataset": info.get("dataset") or task.dataset,
    }
    return training, validation, summary


def fill_batch(entries: Sequence[dict], count: int) -> list[dict]:
    """``entries`` repeated, in order, until there are at least ``count`` (one batch on every
    process): one or two labelled cases are a training set in the teach loop, but a batch of two
    volumes needs two entries. Each repeat is its own sample, with its own augmentation seed."""
    entries = list(entries)
    if not entries or len(entries) >= count:
        return entries
    return entries * -(-count // len(entries))
