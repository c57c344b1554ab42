"""Model download, import and lookup against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from segresmamba.errors import DownloadError, ModelNotAvailableError, RegistryError
from segresmamba.network import SegResMamba
from segresmamba.weights import (
    cache_dir,
    download_model,
    import_model,
    list_models,
    make_header,
    models_json_path,
    resolve_model,
    save_checkpoint,
)


class FileServer(BaseHTTPRequestHandler):
    """Serves ``files`` with Range support; paths in ``drop`` lose the connection mid-file."""

    files: dict[str, bytes] = {}
    drop: dict[str, int] = {}  # path -> how many more requests to cut off halfway
    log: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.log.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.drop.get(self.path, 0) > 0:
            self.drop[self.path] -= 1
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True  # the client sees the connection end early
            return
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(0)
    model = SegResMamba(**get_phantom_kwargs())
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, model, make_header("phantom", provenance={"dataset": "test"}))
    return path.read_bytes()


def get_phantom_kwargs() -> dict:
    from segresmamba.tasks import get_task

    return get_task("phantom").network_kwargs()


@pytest.fixture
def server():
    FileServer.files, FileServer.drop, FileServer.log = {}, {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FileServer)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_bytes: bytes, server: str):
    """A models.json of test models served by ``server``, and an empty cache in tmp_path."""

    def write(**models: dict) -> Path:
        entries = []
        for name, fields in models.items():
            entry = {
                "name": name,
                "task": "phantom",
                "version": "0.1.0",
                "url": f"{server}/{name}.safetensors",
                "sha256": hashlib.sha256(checkpoint_bytes).hexdigest(),
                "size": len(checkpoint_bytes),
                "licence": "Apache-2.0",
                "inputs": ["CT"],
                "description": "test model",
            }
            entry.update(fields)
            entries.append(entry)
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"format_version": 1, "models": entries}), encoding="utf-8")
        return path

    monkeypatch.setenv("SEGRESMAMBA_MODELS_JSON", str(write(demo={})))
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "cache"))
    FileServer.files["/demo.safetensors"] = checkpoint_bytes
    return write


def cached_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_dropped_connection_is_resumed_with_range(
    registry, tmp_path: Path, checkpoint_bytes
) -> None:
    FileServer.drop["/demo.safetensors"] = 1
    path = download_model("demo", progress=False)
    assert path == tmp_path / "cache" / "models" / "demo.safetensors"
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(checkpoint_bytes).digest()
    half = len(checkpoint_bytes) // 2
    assert FileServer.log == [("/demo.safetensors", None), ("/demo.safetensors", f"bytes={half}-")]
    assert cached_files(tmp_path) == ["demo.safetensors"]


def test_a_partial_file_from_an_earlier_run_is_resumed(
    registry, tmp_path: Path, checkpoint_bytes
) -> None:
    part = tmp_path / "cache" / "models" / "demo.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(checkpoint_bytes[:1000])
    seen = []
    path = download_model("demo", progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == checkpoint_bytes
    assert FileServer.log == [("/demo.safetensors", "bytes=1000-")]
    assert seen[-1] == (len(checkpoint_bytes), len(checkpoint_bytes))
    assert download_model("demo", progress=False) == path and len(FileServer.log) == 1  # cached


def test_two_drops_keep_the_part_file_for_later(registry, tmp_path: Path) -> None:
    FileServer.drop["/demo.safetensors"] = 2
    with pytest.raises(DownloadError, match="interrupted twice.*run the download again to resume"):
        download_model("demo", progress=False)
    assert cached_files(tmp_path) == ["demo.safetensors.part"]
    assert download_model("demo", progress=False).is_file()  # and the next run finishes it
    assert FileServer.log[-1][1] is not None


def test_wrong_checksum_leaves_nothing_that_looks_good(
    registry, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SEGRESMAMBA_MODELS_JSON", str(registry(demo={"sha256": "0" * 64})))
    with pytest.raises(DownloadError, match="checksum mismatch.*the file was deleted"):
        download_model("demo", progress=False)
    assert cached_files(tmp_path) == []
    with pytest.raises(ModelNotAvailableError):
        resolve_model("phantom", "demo", download=False)


def test_wrong_size_is_refused(registry, tmp_path: Path, monkeypatch, checkpoint_bytes) -> None:
    monkeypatch.setenv(
        "SEGRESMAMBA_MODELS_JSON", str(registry(demo={"size": len(checkpoint_bytes) - 10}))
    )
    with pytest.raises(DownloadError, match="sends more than the registry's"):
        download_model("demo", progress=False)
    assert cached_files(tmp_path) == []


def test_http_404_names_the_url_and_status(registry, server: str, monkeypatch) -> None:
    monkeypatch.setenv("SEGRESMAMBA_MODELS_JSON", str(registry(gone={})))
    with pytest.raises(DownloadError, match=f"{server}/gone.safetensors failed: HTTP 404"):
        download_model("gone", progress=False)


def test_resolve_downloads_a_registry_model_once(registry, tmp_path: Path) -> None:
    path = resolve_model("phantom", progress=False)
    assert path == tmp_path / "cache" / "models" / "demo.safetensors"
    assert resolve_model("phantom", "demo") == path and len(FileServer.log) == 1
    assert resolve_model("phantom", str(path)) == path
    with pytest.raises(ModelNotAvailableError, match="model demo is for task phantom, not btcv"):
        resolve_model("btcv", "demo")


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"demo.safetensors": None, "README.txt": b"hi"}, "unexpected member.*README.txt"),
        ({"README.txt": b"hi"}, "lacks the expected member"),
        ({"other.safetensors": None}, "lacks the expected member demo.safetensors"),
        ({"../demo.safetensors": None}, "unsafe member name"),
    ],
)
def test_zip_import_refuses_extra_missing_and_unsafe_members(
    registry, tmp_path: Path, checkpoint_bytes, members: dict, message: str
) -> None:
    members = {k: checkpoint_bytes if v is None else v for k, v in members.items()}
    archive = zip_with(tmp_path / "model.zip", members)
    with pytest.raises(DownloadError, match=message):
        import_model(archive, name="demo")
    assert cached_files(tmp_path) == []


def test_good_imports_land_in_the_cache(registry, tmp_path: Path, checkpoint_bytes) -> None:
    archive = zip_with(tmp_path / "model.zip", {"demo.safetensors": checkpoint_bytes})
    path = import_model(archive)  # recognised by its sha256
    assert (
        path == cache_dir() / "models" / "demo.safetensors"
        and path.read_bytes() == checkpoint_bytes
    )
    assert resolve_model("phantom", download=False) == path
    loose = tmp_path / "my-phantom.safetensors"
    loose.write_bytes(checkpoint_bytes)
    custom = import_model(loose, name="my-phantom")
    assert custom == tmp_path / "cache" / "models" / "my-phantom.safetensors"
    assert resolve_model("phantom", "my-phantom") == custom
    assert cached_files(tmp_path) == ["demo.safetensors", "my-phantom.safetensors"]
    assert FileServer.log == []


def test_import_refuses_a_file_that_is_not_the_published_one(
    registry, tmp_path: Path, checkpoint_bytes
) -> None:
    different = bytearray(checkpoint_bytes)
    different[-1] ^= 0xFF
    path = tmp_path / "demo.safetensors"
    path.write_bytes(bytes(different))
    with pytest.raises(DownloadError, match="is not the published"):
        import_model(path, name="demo")
    with pytest.raises(DownloadError, match="corrupt or was modified"):
        import_model(path, name="mine")
    assert cached_files(tmp_path) == []


def test_tasks_without_weights_say_how_to_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SEGRESMAMBA_MODELS_JSON", raising=False)
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path))
    weights = Path(__file__).resolve().parents[1] / "SegResMambaSlicer" / "segresmamba" / "weights"
    assert models_json_path() == weights / "models.json"
    assert {m.task for m in list_models()} >= {"btcv", "brats", "spleen", "phantom"}
    for task in ("btcv", "brats", "spleen"):
        message = (
            f"no trained weights published yet for task {task}; import a checkpoint with "
            "`segresmamba models import FILE`"
        )
        with pytest.raises(ModelNotAvailableError, match=message.replace("`", ".")):
            resolve_model(task)


def test_cache_dir_follows_the_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import segresmamba.weights.registry as registry_module

    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    monkeypatch.delenv("SEGRESMAMBA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    for platform, expected in [
        ("linux", tmp_path / "xdg" / "segresmamba"),
        ("darwin", tmp_path / "Library" / "Caches" / "SegResMamba"),
        ("win32", tmp_path / "local" / "SegResMamba"),
    ]:
        monkeypatch.setattr(registry_module.sys, "platform", platform)
        assert cache_dir() == expected
    monkeypatch.setattr(registry_module.sys, "platform", "linux")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / ".cache" / "segresmamba"


def test_a_missing_registry_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEGRESMAMBA_MODELS_JSON", str(tmp_path / "nowhere.json"))
    with pytest.raises(RegistryError, match="SEGRESMAMBA_MODELS_JSON points at .*nowhere.json"):
        list_models()
