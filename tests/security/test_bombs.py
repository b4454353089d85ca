"""Bombs: a few kilobytes or megabytes on the wire that would take gigabytes and
seconds to decode or unpack. Each is refused with a code within a second, the
server's memory barely moves, and /healthz keeps answering meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from aidx.inference.settings import Role

from ..conftest import auth
from .bombs import j2k_dicom, zeros_crc, zeros_deflate, zip_of
from .conftest import Server, timed
from .wire import while_probing

pytestmark = pytest.mark.slow
MIB = 1 << 20
RSS_BOUND_BYTES = 64 * MIB


def refused_meanwhile(server: Server, send: Callable[[], httpx.Response]) -> tuple:  # type: ignore[type-arg]
    """Send the bomb while /healthz is asked again and again: (answer, seconds, RSS
    growth, slowest /healthz in ms)."""
    probed = while_probing(server, send)
    answer, growth, slowest_ms = probed.answer, probed.rss_growth_bytes, max(probed.probes_ms)
    print(f"\n{answer.status_code} {answer.json().get('code')} in {probed.seconds:.3f} s, "
          f"RSS +{growth / MIB:.1f} MiB, /healthz max {slowest_ms:.0f} ms")  # fmt: skip
    return answer, probed.seconds, growth, slowest_ms


def post_cxr(server: Server, data: bytes) -> httpx.Response:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    return httpx.post(f"{server.url}/v1/cxr", content=data, headers=headers, timeout=60)


def post_ct_zip(server: Server, data: bytes) -> httpx.Response:
    headers = {**auth(Role.radiologist), "Content-Type": "application/zip"}
    return httpx.post(f"{server.url}/v1/ct", content=data, headers=headers, timeout=60)


def test_a_4kb_jpeg2000_dicom_of_12000_square_is_refused_before_decoding(server: Server) -> None:
    bomb = j2k_dicom(header_px=12000, codestream_px=12000)
    assert len(bomb) < 4096
    answer, seconds, growth, slowest_ms = refused_meanwhile(server, lambda: post_cxr(server, bomb))
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "too_many_pixels"
    assert seconds < 1.0
    assert growth < RSS_BOUND_BYTES
    assert slowest_ms < 200


def test_a_codestream_that_contradicts_its_header_is_refused_before_decoding(
    server: Server,
) -> None:
    bomb = j2k_dicom(header_px=512, codestream_px=12000)  # the decoder would trust SIZ
    (answer, seconds) = timed(lambda: post_cxr(server, bomb))
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "pixel_data_mismatch"
    assert seconds < 1.0


def test_a_zip_member_whose_header_lies_is_not_inflated_past_what_it_declares(
    server: Server,
) -> None:
    packed, unpacked = zeros_deflate(256 * MIB)  # 1.7 MB that inflates to 256 MiB
    bomb = zip_of("slice.dcm", packed, unpacked=unpacked, declared=MIB, crc=0)
    answer, seconds, growth, slowest_ms = refused_meanwhile(
        server, lambda: post_ct_zip(server, bomb)
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_zip"  # its CRC cannot match: a damaged zip
    assert seconds < 1.0
    assert growth < RSS_BOUND_BYTES
    assert slowest_ms < 200


def test_a_zip_bomb_that_declares_its_size_is_refused_before_inflating(server: Server) -> None:
    packed, _ = zeros_deflate(64 * MIB)  # what it holds does not matter: it is never inflated
    bomb = zip_of("slice.dcm", packed, unpacked=0, declared=int(2.5 * 1024 * MIB), crc=0)
    answer, seconds, growth, slowest_ms = refused_meanwhile(
        server, lambda: post_ct_zip(server, bomb)
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "payload_too_large"
    assert seconds < 1.0
    assert growth < RSS_BOUND_BYTES
    assert slowest_ms < 200


def test_a_zip_member_packed_past_the_ratio_limit_is_refused(server: Server) -> None:
    packed, unpacked = zeros_deflate(200 * MIB)  # within the size limit, 159 times packed
    bomb = zip_of(
        "slice.dcm", packed, unpacked=unpacked, declared=unpacked, crc=zeros_crc(unpacked)
    )
    answer, seconds = timed(lambda: post_ct_zip(server, bomb))
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "zip_ratio_exceeded"  # AIDX_CT_MAX_COMPRESSION_RATIO=100 here
    assert seconds < 1.0
