"""Is an image file complete? Checked before ITK reads it, because ITK does not always say.

A truncated ``.nii.gz`` reads in ITK as its first slices followed by zeros, and a corrupt gzip
or zlib stream can read as plausible voxels: either would be segmented as if it were fine. So
the compressed stream is decompressed to its end here (its checksum included) and its length
compared with the size the header declares; uncompressed data must be as long as declared.
Files whose layout is not understood here (ASCII NRRD, MetaImage file lists) are left to ITK.
"""

from __future__ import annotations

import bz2
import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import SegResMambaError

__all__ = ["check_complete"]

_CHUNK = 1 << 20
_NRRD_BYTES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort")
    + ("unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t")
    + ("float",),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int")
    + ("int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int")
    + ("uint64", "uint64_t", "double"),
}
_NRRD_SIZE = {name: size for size, names in _NRRD_BYTES.items() for name in names}
_META_SIZE = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 4}
_META_SIZE.update({"ULONG": 4, "LONG_LONG": 8, "ULONG_LONG": 8, "FLOAT": 4, "DOUBLE": 8})


class _Damaged(Exception):
    """The stream ended early or failed its checksum (message: how)."""


def check_complete(path: str | Path) -> None:
    """Raise SegResMambaError naming ``path`` when its voxel data is shorter than its header
    declares or its compressed stream is truncated or corrupt; return quietly otherwise."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            _check_nifti(path)
        elif name.endswith((".nrrd", ".nhdr")):
            _check_nrrd(path)
        elif name.endswith((".mha", ".mhd")):
            _check_metaimage(path)
    except _Damaged as damage:
        raise SegResMambaError(
            f"cannot read {path.name}: it is truncated or damaged ({damage}); copy or export it "
            "again"
        ) from None
    except OSError as error:
        raise SegResMambaError(f"cannot read {path.name}: {error.strerror or error}") from None


def _count_gzip(path: Path, offset: int = 0) -> int:
    """Bytes that the gzip stream in ``path`` from ``offset`` decompresses to, checksum checked."""
    with open(path, "rb") as raw:
        raw.seek(offset)
        total = 0
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
        except EOFError:
            raise _Damaged("its compressed data ends early") from None
        except (gzip.BadGzipFile, zlib.error) as error:
            raise _Damaged(f"its compressed data is corrupt: {error}") from None
    return total


def _check_nifti(path: Path) -> None:
    """The decompressed file must hold the header's voxels: vox_offset + prod(dim) * bitpix/8."""
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(352)
    except EOFError:
        raise _Damaged("its compressed data ends inside the header") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise _Damaged(f"its compressed data is corrupt: {error}") from None
    declared = _nifti_bytes(header)
    if declared is None:
        return  # not a NIfTI header we understand: ITK says what it makes of it
    stored = _count_gzip(path) if compressed else path.stat().st_size
    if stored < declared:
        raise _Damaged(f"it holds {stored:,} of the {declared:,} bytes its header declares")


def _nifti_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1 or NIfTI-2 file with this header needs, or None when it is neither."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dim = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            dim = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dim[0] <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dim[1 : dim[0] + 1]], dtype=np.int64))
    return int(offset) + voxels * bitpix // 8


def _header_lines(path: Path, separator: str) -> tuple[dict[str, str], int]:
    """``key<separator>value`` fields of a text header and the byte offset where data begins
    (after the first blank line for NRRD, after ElementDataFile for MetaImage)."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream):
            offset += len(raw)
            line = raw.decode("latin-1").strip()
            if separator == ":" and not line and number:
                break
            key, sep, value = line.partition(separator)
            if sep and not line.startswith("#"):
                fields[key.strip().lower()] = value.strip()
            if separator == "=" and key.strip().lower() == "elementdatafile":
                break
            if number > 1000:
                break
    return fields, offset


def _check_nrrd(path: Path) -> None:
    fields, offset = _header_lines(path, ":")
    size = _NRRD_SIZE.get(fields.get("type", "").lower())
    sizes = re.findall(r"\d+", fields.get("sizes", ""))
    encoding = fields.get("encoding", "raw").lower()
    if size is None or not sizes or encoding not in ("raw", "gzip", "gz", "bzip2", "bz2"):
        return
    declared = size * int(np.prod([int(s) for s in sizes], dtype=np.int64))
    data = fields.get("data file") or fields.get("datafile")
    if data:
        if data.split()[0].upper() == "LIST" or "%" in data:
            return  # several data files: left to ITK
        path, offset = path.parent / data, 0
    if encoding == "raw":
        stored = path.stat().st_size - offset
    elif encoding in ("gzip", "gz"):
        stored = _count_gzip(path, offset)
    else:
        stored = _count_bzip2(path, offset)
    if stored < declared:
        raise _Damaged(f"it holds {stored:,} of the {declared:,} bytes its header declares")


def _count_bzip2(path: Path, offset: int) -> int:
    with open(path, "rb") as raw:
        raw.seek(offset)
        total = 0
        try:
            with bz2.BZ2File(raw) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
        except EOFError:
            raise _Damaged("its compressed data ends early") from None
        except OSError as error:
            raise _Damaged(f"its compressed data is corrupt: {error}") from None
    return total


def _check_metaimage(path: Path) -> None:
    fields, offset = _header_lines(path, "=")
    size = _META_SIZE.get(fields.get("elementtype", "").upper().removeprefix("MET_"))
    dims = re.findall(r"\d+", fields.get("dimsize", ""))
    data = fields.get("elementdatafile", "")
    if size is None or not dims or not data or data.split()[0].upper() == "LIST" or "%" in data:
        return
    channels = int(fields.get("elementnumberofchannels", "1") or 1)
    declared = size * channels * int(np.prod([int(d) for d in dims], dtype=np.int64))
    if data.upper() != "LOCAL":
        path, offset = path.parent / data, int(fields.get("headersize", "0") or 0)
        if offset < 0:
            return  # "HeaderSize = -1": the data are the file's last bytes
    if fields.get("compresseddata", "false").lower() != "true":
        stored = path.stat().st_size - offset
    else:
        stored = _count_zlib(path, offset)
    if stored < declared:
        raise _Damaged(f"it holds {stored:,} of the {declared:,} bytes its header declares")


def _count_zlib(path: Path, offset: int) -> int:
    """Bytes a zlib (or gzip) stream decompresses to; MetaImage writes one after its header."""
    inflater = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, detected
    total = 0
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            while chunk := raw.read(_CHUNK):
                while chunk and not inflater.eof:
                    total += len(inflater.decompress(chunk, _CHUNK))
                    chunk = inflater.unconsumed_tail
                if inflater.eof:
                    break
            while not inflater.eof and (tail := inflater.flush()):
                total += len(tail)
        except zlib.error as error:
            raise _Damaged(f"its compressed data is corrupt: {error}") from None
    if not inflater.eof:
        raise _Damaged("its compressed data ends early")
    return total
