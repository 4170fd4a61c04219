"""A PNG writer that takes the image a band of rows at a time (8-bit RGB, no interlace).

Pillow encodes a PNG only from a whole image in memory; this writes the rows as they
come, so a streamed stylization never holds its output. The format (PNG spec, ISO/IEC
15948) is small: the signature, an IHDR chunk, the zlib stream of the filtered rows
split over IDAT chunks, and IEND; each chunk is length, type, data, CRC-32.

Every row is written with the Paeth filter (type 4), which predicts a byte from its
left, upper and upper-left neighbours; the prediction uses unfiltered bytes only, so a
whole band is filtered at once with array ops.
"""
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAETH = 4
IDAT_BYTES = 1 << 18  # compressed bytes gathered before an IDAT chunk is written
MAX_SIDE = 2**31 - 1  # the spec's limit on width and height


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def paeth_filter(rows, previous):
    """rows (R, B) uint8 (B bytes per row), previous (B,) uint8 (the row above, zeros at the
    top) -> (R, B) uint8 Paeth-filtered bytes, for 3-byte pixels."""
    x = rows.astype(np.int16)                                       # (R, B)
    up = np.empty_like(x)
    up[0] = previous
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, 3:] = x[:, :-3]
    up_left = np.zeros_like(x)
    up_left[:, 3:] = up[:, :-3]
    pa = np.abs(up - up_left)                                       # |p - left|, p = left + up - up_left
    pb = np.abs(left - up_left)                                     # |p - up|
    pc = np.abs(left + up - 2 * up_left)                            # |p - up_left|
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    return (x - predictor).astype(np.uint8)                         # mod 256


class PngRowWriter:
    """Write an RGB PNG of known size to an open binary file, band by band.

    write_rows((R, W, 3) uint8) any number of times, then close(); close checks that
    exactly `height` rows came.
    """

    def __init__(self, file, width, height, level=6):
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise ValueError(f"PNG sides must be 1..{MAX_SIDE}, got {width}x{height}")
        self.file, self.width, self.height = file, int(width), int(height)
        self.rows_written = 0
        self._previous = np.zeros(3 * self.width, dtype=np.uint8)  # the row above row 0 is zeros
        self._compressor = zlib.compressobj(level)
        self._pending = []
        self._pending_bytes = 0
        # IHDR: width, height, bit depth 8, colour type 2 (RGB), deflate, adaptive filters, no interlace.
        file.write(SIGNATURE)
        file.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)))

    def write_rows(self, rows):
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.ndim != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"expected rows of shape (R, {self.width}, 3), got {rows.shape}")
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"more than the {self.height} rows of the image")
        if rows.shape[0] == 0:
            return
        flat = rows.reshape(rows.shape[0], 3 * self.width)          # (R, 3W)
        filtered = np.empty((flat.shape[0], 1 + flat.shape[1]), dtype=np.uint8)
        filtered[:, 0] = PAETH
        filtered[:, 1:] = paeth_filter(flat, self._previous)
        self._previous = flat[-1].copy()
        self._add(self._compressor.compress(filtered.tobytes()))
        self.rows_written += rows.shape[0]

    def _add(self, data, flush=False):
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= IDAT_BYTES or (flush and self._pending_bytes):
            self.file.write(_chunk(b"IDAT", b"".join(self._pending)))
            self._pending, self._pending_bytes = [], 0

    def close(self):
        if self.rows_written != self.height:
            raise ValueError(f"PNG has {self.rows_written} of its {self.height} rows")
        self._add(self._compressor.flush(), flush=True)
        self.file.write(_chunk(b"IEND", b""))
