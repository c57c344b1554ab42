"""Checkpoints: safetensors + header round trip, and every bad file refused with a clear message."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch

from segresmamba.errors import CheckpointError
from segresmamba.network import SegResMamba
from segresmamba.tasks import get_task
from segresmamba.weights import (
    load_checkpoint,
    make_header,
    read_header,
    registry_entry_for,
    save_checkpoint,
    verify_model,
)

TINY = {"widths": (8, 16, 32, 64)}
INPUT_SHAPE = (1, 1, 64, 64, 64)  # the smallest input SegResMamba takes (MIN_SIZE)


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of torch.load (pickle) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must never be used for checkpoints")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)


@pytest.fixture(scope="module")
def tiny_model() -> SegResMamba:
    torch.manual_seed(0)
    return SegResMamba(**get_task("phantom").network_kwargs()).eval()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory, tiny_model: SegResMamba) -> Path:
    header = make_header("phantom", TINY, {"dataset": "phantom", "steps": 0, "command": "test"})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", tiny_model, header)


@pytest.fixture
def copy(good_file: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(good_file, tmp_path / "copy.safetensors"))


def data_start(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def write_raw(path: Path, tensors: dict, header: dict) -> Path:
    """A file as another tool might write it: safetensors with our metadata, no checks."""
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(path),
        {"segresmamba": json.dumps(header)},
    )
    return path


def test_round_trip_gives_identical_outputs(good_file: Path, tiny_model: SegResMamba) -> None:
    model, header = load_checkpoint(good_file, task="phantom")
    assert not model.training
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))
    assert header["task"] == "phantom" and header["format"] == "segresmamba-checkpoint"
    assert header["network"]["widths"] == [8, 16, 32, 64] and header["network"]["out_channels"] == 6
    assert [label["name"] for label in header["labels"]] == [
        label.name for label in get_task("phantom").labels
    ]
    assert header["preprocessing"]["patch_size"] == [64, 64, 64]
    assert header["provenance"]["dataset"] == "phantom" and header["provenance"]["date"]
    assert read_header(good_file) == header


def test_save_is_atomic_and_does_not_overwrite(good_file: Path, tiny_model: SegResMamba) -> None:
    header = read_header(good_file)
    with pytest.raises(CheckpointError, match="already exists; pass overwrite=True"):
        save_checkpoint(good_file, tiny_model, header)
    save_checkpoint(good_file, tiny_model, header, overwrite=True)
    assert [p.name for p in good_file.parent.iterdir()] == [good_file.name]


def test_save_refuses_a_model_that_does_not_match_its_header(tmp_path: Path, tiny_model) -> None:
    header = make_header("phantom", {"widths": (16, 32, 64, 128)})
    with pytest.raises(CheckpointError, match="model does not match header network"):
        save_checkpoint(tmp_path / "x.safetensors", tiny_model, header)
    assert not list(tmp_path.iterdir())


def test_make_header_refuses_channels_that_do_not_fit_the_task() -> None:
    with pytest.raises(
        CheckpointError, match="out_channels=5 does not fit task phantom, which needs 6"
    ):
        make_header("phantom", {"out_channels": 5})


def test_truncated_file(copy: Path) -> None:
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="copy.safetensors is truncated"):
        load_checkpoint(copy)


def test_file_cut_inside_its_header(copy: Path) -> None:
    copy.write_bytes(copy.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(copy)


def test_flipped_byte_in_the_weights_is_caught_by_the_header_checksum(copy: Path) -> None:
    raw = bytearray(copy.read_bytes())
    raw[data_start(copy) + 4321] ^= 0x01
    copy.write_bytes(bytes(raw))
    read_header(copy)  # the structure is intact ...
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        load_checkpoint(copy)  # ... but the weights are not the ones saved


def test_modified_weights_are_caught_by_the_registry_sha256(
    good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-saved, internally consistent but different file passes load, not the registry."""
    entry = registry_entry_for(good_file)
    models_json = tmp_path / "models.json"
    model = {
        "name": "phantom-test",
        "task": "phantom",
        "version": "0.1.0",
        "url": None,
        "sha256": entry["sha256"],
        "size": entry["size"],
        "licence": "Apache-2.0",
        "inputs": ["CT"],
        "description": "test",
    }
    models_json.write_text(json.dumps({"format_version": 1, "models": [model]}), encoding="utf-8")
    monkeypatch.setenv("SEGRESMAMBA_MODELS_JSON", str(models_json))
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "home"))
    cached = tmp_path / "home" / "models" / "phantom-test.safetensors"
    cached.parent.mkdir(parents=True)
    shutil.copy(good_file, cached)
    assert verify_model("phantom-test").sha256 == entry["sha256"]

    tampered, header = load_checkpoint(good_file)
    with torch.no_grad():
        tampered.head.bias[0] += 1.0
    save_checkpoint(cached, tampered, header, overwrite=True)
    load_checkpoint(cached, task="phantom")  # consistent in itself
    with pytest.raises(CheckpointError, match="does not match model phantom-test in the registry"):
        verify_model("phantom-test")


def test_wrong_task(good_file: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint is for task phantom, not btcv"):
        load_checkpoint(good_file, task="btcv")


def test_labels_that_differ_from_the_task(copy: Path, tiny_model) -> None:
    header = read_header(copy)
    header["labels"][3]["name"], header["labels"][4]["name"] = "left kidney", "right kidney"
    save_checkpoint(copy, tiny_model, header, overwrite=True)
    with pytest.raises(
        CheckpointError, match="label 3 is 'left kidney' in the checkpoint, 'right kidney'"
    ):
        load_checkpoint(copy, task="phantom")


def test_label_count_against_out_channels(tmp_path: Path, tiny_model) -> None:
    header = make_header("phantom", TINY)
    header["labels"] = header["labels"][:5]
    path = write_raw(tmp_path / "x.safetensors", tiny_model.state_dict(), header)
    with pytest.raises(CheckpointError, match="lists 5 labels but the network has out_channels=6"):
        load_checkpoint(path)


def test_missing_tensor_is_named(tmp_path: Path, tiny_model) -> None:
    tensors = dict(tiny_model.state_dict())
    del tensors["head.bias"]
    path = write_raw(tmp_path / "x.safetensors", tensors, make_header("phantom", TINY))
    with pytest.raises(CheckpointError, match="1 missing: head.bias"):
        load_checkpoint(path)


def test_unexpected_tensor_is_named(tmp_path: Path, tiny_model) -> None:
    tensors = {**tiny_model.state_dict(), "extra.weight": torch.zeros(3)}
    path = write_raw(tmp_path / "x.safetensors", tensors, make_header("phantom", TINY))
    with pytest.raises(CheckpointError, match="1 unexpected: extra.weight"):
        load_checkpoint(path)


def test_wrong_shape_is_named(tmp_path: Path, tiny_model) -> None:
    tensors = dict(tiny_model.state_dict())
    tensors["stem.weight"] = torch.zeros(8, 1, 5, 5, 5)
    path = write_raw(tmp_path / "x.safetensors", tensors, make_header("phantom", TINY))
    with pytest.raises(
        CheckpointError,
        match=r"stem.weight is \(8, 1, 5, 5, 5\), the network needs \(8, 1, 7, 7, 7\)",
    ):
        load_checkpoint(path)


def test_header_problems(tmp_path: Path, tiny_model) -> None:
    tensors = tiny_model.state_dict()
    for change, message in [
        (lambda h: h.pop("preprocessing"), "lacks required field.*preprocessing"),
        (lambda h: h.update(format_version=2), "format_version 2 is newer"),
        (lambda h: h.update(format="other"), "not a SegResMamba checkpoint header"),
        (lambda h: h["network"].update(depth=3), "unknown network argument.*depth"),
    ]:
        header = make_header("phantom", TINY)
        change(header)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(write_raw(tmp_path / "x.safetensors", tensors, header))


def test_not_a_checkpoint(tmp_path: Path, tiny_model) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights\n" * 10, encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(text)
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a SegResMamba checkpoint"):
        load_checkpoint(plain)
    pickle = tmp_path / "model.pt"
    torch.save(tiny_model.state_dict(), pickle)
    with pytest.raises(CheckpointError, match="PyTorch pickle.*never loaded"):
        load_checkpoint(pickle)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
