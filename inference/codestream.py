"""The image size a compressed DICOM frame declares in its own codestream header, read
without decoding: JPEG 2000's SIZ marker segment, JPEG's (and JPEG-LS's) SOF. A decoder
allocates what the codestream says, whatever the DICOM header says, so both are
checked before any pixels are decoded (dicom_input.check_pixel_budget)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.uid import UID

# JPEG: baseline, extended, lossless (process 14, SV1), JPEG-LS lossless and near-lossless
JPEG_SYNTAXES = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in ("50", "51", "57", "70", "80", "81"))
# JPEG 2000 (lossless, lossy, Part 2 multi-component) and High-Throughput JPEG 2000
J2K_SYNTAXES = frozenset(
    f"1.2.840.10008.1.2.4.{n}" for n in ("90", "91", "92", "93", "201", "202", "203")
)
_SOC_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the SIZ marker
# start-of-frame markers: every SOFn except DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length
_SOS = 0xDA


@dataclass(frozen=True)
class CodestreamSize:
    rows: int
    columns: int
    components: int


def codestream_size(frame: bytes, transfer_syntax: UID | str) -> CodestreamSize | None:
    """The size a frame's codestream declares; None where its transfer syntax has no
    such header here. Raises ValueError when the header is missing or cut short."""
    if transfer_syntax in J2K_SYNTAXES:
        return j2k_size(frame)
    if transfer_syntax in JPEG_SYNTAXES:
        return jpeg_size(frame)
    return None


def j2k_size(frame: bytes) -> CodestreamSize:
    """From SIZ, which follows SOC at once (a JP2 file wraps the codestream in boxes)."""
    at = frame.find(_SOC_SIZ)
    if at < 0:
        raise ValueError("no JPEG 2000 codestream header (SOC, SIZ)")
    fields = frame[at + 4 : at + 4 + 38]
    if len(fields) < 38:
        raise ValueError("the JPEG 2000 SIZ marker segment is cut short")
    # Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz
    _, _, xsiz, ysiz, xosiz, yosiz, *_, csiz = struct.unpack(">HHIIIIIIIIH", fields)
    return CodestreamSize(rows=ysiz - yosiz, columns=xsiz - xosiz, components=csiz)


def jpeg_size(frame: bytes) -> CodestreamSize:
    """From the first SOFn segment, walking the marker segments from SOI."""
    if not frame.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start-of-image marker")
    at = 2
    while at + 4 <= len(frame):
        if frame[at] != 0xFF:
            raise ValueError("a JPEG marker segment is malformed")
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker == _SOS:
            break
        (length,) = struct.unpack(">H", frame[at + 2 : at + 4])
        if marker in _SOF:
            sof = frame[at + 4 : at + 10]
            if len(sof) < 6:
                break
            _, rows, columns, components = struct.unpack(">BHHB", sof)
            return CodestreamSize(rows=rows, columns=columns, components=components)
        at += 2 + length
    raise ValueError("no JPEG start-of-frame marker before the scan")
