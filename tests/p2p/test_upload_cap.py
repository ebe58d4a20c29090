"""The upload cap of `/meshp2p/model/1.0.0` (p2p/model_fetch.py's UploadCap) with plain numbers: the configured
cap, and the lower one that holds while the node's own inference runs (`yield_to`)."""

from __future__ import annotations

import pytest

from meshp2p.p2p.model_fetch import BUSY_UPLOAD_BYTES_S, UploadCap


def sent_in(cap: UploadCap, seconds: float, piece: int = 256 * 1024) -> int:
    """Bytes the cap lets through in `seconds` of a sender that always has more to send."""
    now, sent = 0.0, 0
    while True:
        delay = cap.delay_for(piece, now)
        now += delay
        if now > seconds:
            return sent
        sent += piece


def test_no_cap_and_not_busy_sends_at_once() -> None:
    cap = UploadCap(None)
    assert all(cap.delay_for(10**9, float(t)) == 0.0 for t in range(5))


def test_the_configured_cap_holds_on_average_with_a_one_second_burst() -> None:
    assert sent_in(UploadCap(1e6), 10.0) == pytest.approx(11e6, rel=0.03)


def test_while_inference_runs_uploads_drop_to_the_busy_cap_and_come_back() -> None:
    busy = [True]
    cap = UploadCap(None, yield_to=lambda: busy[0])
    assert cap.rate_now() == BUSY_UPLOAD_BYTES_S
    assert sent_in(cap, 10.0) == pytest.approx(11 * BUSY_UPLOAD_BYTES_S, rel=0.03)
    busy[0] = False
    assert cap.rate_now() is None and cap.delay_for(10**9, 20.0) == 0.0


def test_a_configured_cap_below_the_busy_one_stays_in_force_while_busy() -> None:
    cap = UploadCap(1e6, yield_to=lambda: True)
    assert cap.rate_now() == 1e6
    faster = UploadCap(50e6, yield_to=lambda: True)
    assert faster.rate_now() == BUSY_UPLOAD_BYTES_S
