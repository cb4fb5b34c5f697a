"""Reading IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a tiny header followed by one C-order array, big-endian:

    bytes 0-1   zero
    byte  2     element type (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
                0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension, as big-endian uint32
    the data    prod(sizes) elements

MNIST images are (N, 28, 28) unsigned bytes (magic 0x00000803), labels (N,)
(magic 0x00000801). Files are often gzipped; both forms are accepted.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np


class DatasetError(Exception):
    """A dataset file is missing, damaged or does not match its checksum."""


ELEMENT_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def decompressed_bytes(path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (recognised by its first two bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: bad gzip data ({error})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Validate an IDX header against the data length and return the array (native byte order)."""
    if len(data) < 4:
        raise DatasetError(f"{name}: truncated: {len(data)} bytes, shorter "
                           "than the 4-byte IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{name}: bad magic: expected two zero bytes, got "
                           f"{data[:4].hex()} (not an IDX file)")
    type_code, ndim = data[2], data[3]
    if type_code not in ELEMENT_TYPES:
        raise DatasetError(f"{name}: unknown element type 0x{type_code:02x} "
                           f"(expected one of {', '.join(f'0x{c:02x}' for c in ELEMENT_TYPES)})")
    if ndim == 0:
        raise DatasetError(f"{name}: the header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: truncated: {len(data)} bytes, shorter than "
                           f"its {header}-byte header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(ELEMENT_TYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) < expected:
        raise DatasetError(f"{name}: truncated: {len(data)} bytes, expected "
                           f"{expected} for shape {shape}")
    if len(data) > expected:
        raise DatasetError(f"{name}: {len(data) - expected} unexpected bytes after "
                           f"the data of shape {shape}")
    # (prod,) -> shape, C order
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in the machine's byte order


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzipped or raw, checking magic, type, dimensions and exact length.

    Raises:
        DatasetError: naming the file and what is wrong with it.
    """
    return parse_idx(decompressed_bytes(path), str(path))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz); the tests use it."""
    array = np.asarray(array)
    codes = {np.dtype(t).newbyteorder("=").str: code for code, t in ELEMENT_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype}")
    big_endian = array.astype(np.dtype(ELEMENT_TYPES[code]))
    data = bytes([0, 0, code,
                  array.ndim]) + np.asarray(array.shape,
                                            dtype=">u4").tobytes() + big_endian.tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)
