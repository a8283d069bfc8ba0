"""A small PNG codec for 16-bit colour images, which Pillow reduces to 8 bits.

Pillow reads 16-bit RGB / RGBA / grey+alpha PNGs as 8-bit images and cannot write them. This
module reads and writes them losslessly: non-interlaced, bit depth 16, colour types 0 (grey),
2 (RGB), 4 (grey + alpha) and 6 (RGBA). Rows are written with filter type 0 (none); reading
handles all five PNG filter types (Average and Paeth rows are decoded byte by byte in Python, so
large images written by other tools with those filters take a few seconds).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import InputFileError

__all__ = ["png_header", "read_png16", "write_png16"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def png_header(path: str) -> dict | None:
    """``{"width", "height", "bit_depth", "color_type", "interlace"}`` of a PNG file, or None
    if the file does not start with a PNG signature and IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return {"width": width, "height": height, "bit_depth": depth, "color_type": ctype,
            "interlace": interlace}


def _chunks(data: bytes, path: str):
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise InputFileError(f"corrupt image {path}: truncated PNG chunk {kind!r}")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise InputFileError(f"corrupt image {path}: CRC mismatch in PNG chunk {kind!r}")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise InputFileError(f"corrupt image {path}: PNG ends without an IEND chunk")


def _unfilter_sequential(ftype: int, row: bytes, prev: bytearray, bpp: int) -> bytearray:
    out = bytearray(row)
    n = len(out)
    if ftype == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
    else:  # Paeth
        for i in range(n):
            a = out[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[i] = (out[i] + pred) & 0xFF
    return out


def read_png16(path: str) -> np.ndarray:
    """Decode a 16-bit non-interlaced PNG into a uint16 array ``HxWxC`` (C = 1, 2, 3 or 4)."""
    with open(path, "rb") as fh:
        data = fh.read()
    head = png_header(path)
    if head is None:
        raise InputFileError(f"corrupt image {path}: not a PNG file")
    if head["bit_depth"] != 16 or head["color_type"] not in _CHANNELS:
        raise InputFileError(f"cannot read image {path}: not a 16-bit grey/RGB(A) PNG")
    if head["interlace"]:
        raise InputFileError(f"cannot read image {path}: interlaced 16-bit PNGs are not supported")
    width, height = head["width"], head["height"]
    channels = _CHANNELS[head["color_type"]]
    idat = b"".join(body for kind, body in _chunks(data, path) if kind == b"IDAT")
    try:
        raw = zlib.decompress(idat)
    except zlib.error as exc:
        raise InputFileError(f"corrupt image {path}: {exc}") from None
    bpp = 2 * channels
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise InputFileError(f"corrupt image {path}: PNG pixel data is truncated")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    out = np.empty((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        ftype, row = int(rows[y, 0]), rows[y, 1:]
        if ftype == 0:
            cur = row
        elif ftype == 1:
            cur = (np.cumsum(row.reshape(width, bpp).astype(np.int64), axis=0) & 0xFF)
            cur = cur.astype(np.uint8).reshape(stride)
        elif ftype == 2:
            cur = row + prev  # uint8 arithmetic wraps modulo 256
        elif ftype in (3, 4):
            cur = np.frombuffer(bytes(_unfilter_sequential(ftype, row.tobytes(), bytearray(prev.tobytes()), bpp)),
                                dtype=np.uint8)
        else:
            raise InputFileError(f"corrupt image {path}: unknown PNG filter type {ftype} in row {y}")
        out[y] = cur
        prev = out[y]
    return out.view(">u2").astype(np.uint16).reshape(height, width, channels)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png16(path: str, array: np.ndarray) -> None:
    """Write a uint16 array ``HxW`` or ``HxWxC`` (C = 1, 2, 3 or 4) as a 16-bit PNG."""
    arr = np.asarray(array)
    if arr.dtype != np.uint16:
        raise ValueError(f"write_png16 needs uint16 data, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    height, width, channels = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    be = arr.astype(">u2").reshape(height, width * channels).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), be], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, ctype, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6))
                 + _chunk(b"IEND", b""))
