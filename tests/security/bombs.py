"""Hostile inputs built in the test, small on the wire and huge once unpacked: a JPEG
2000 DICOM whose codestream declares 12000 x 12000, and deflate streams that inflate
a thousand-fold (built symbol by symbol: compressing gigabytes of zeros takes a minute)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless


def j2k_dicom(*, header_px: int, codestream_px: int) -> bytes:
    """A chest CR whose header says header_px square and whose one-grey JPEG 2000
    codestream (a 64 x 64 image, its SIZ patched) says codestream_px square."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    ds.Rows = ds.Columns = 64
    ds.compress(JPEG2000Lossless, np.full((64, 64), 100, dtype=np.uint16))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    at = frame.find(b"\xff\x4f\xff\x51") + 8  # SOC, SIZ, Lsiz, Rsiz: then Xsiz, Ysiz
    frame[at : at + 8] = struct.pack(">II", codestream_px, codestream_px)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.Rows = ds.Columns = header_px
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class _Bits:
    def __init__(self) -> None:
        self.value, self.count = 0, 0

    def code(self, bits: str) -> None:  # a Huffman code, most significant bit first
        for bit in bits:
            self.value |= int(bit) << self.count
            self.count += 1

    def raw(self, value: int, width: int) -> None:  # a header field, least significant first
        self.value |= value << self.count
        self.count += width

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


_COPY_258 = "11000101" + "00000"  # fixed Huffman: length 258 (code 285), distance 1


def zeros_deflate(unpacked_bytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of about `unpacked_bytes` zeros (one fixed-Huffman block:
    a literal 0, then copies of 258 bytes at distance 1), and its exact unpacked size."""
    units = max(unpacked_bytes // (258 * 8), 1)
    head = _Bits()
    head.raw(1, 1)  # BFINAL
    head.raw(1, 2)  # BTYPE 01: fixed Huffman
    head.code("00110000")  # literal 0
    head.code(_COPY_258)  # 24 bits so far: what follows is byte-aligned
    unit = _Bits()
    for _ in range(8):  # 8 copies are 104 bits: 13 whole bytes, repeated as bytes
        unit.code(_COPY_258)
    tail = _Bits()
    tail.code("0000000")  # end of block
    stream = head.bytes() + unit.bytes() * units + tail.bytes()
    return stream, 1 + 258 + 258 * 8 * units


def zip_of(name: str, packed: bytes, *, unpacked: int, declared: int, crc: int) -> bytes:
    """A one-member zip (deflated) whose directory declares `declared` unpacked bytes."""
    name_b = name.encode()
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed), declared, len(name_b), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(packed), declared,
        len(name_b), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    offset = len(local) + len(name_b) + len(packed)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name_b), offset, 0)
    return local + name_b + packed + central + name_b + end


def zeros_crc(size: int) -> int:
    crc, block = 0, bytes(1 << 20)
    for start in range(0, size, len(block)):
        crc = zlib.crc32(block[: min(len(block), size - start)], crc)
    return crc
