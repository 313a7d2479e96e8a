"""Cameras are treated kindly: a refused login backs off to minutes, a frozen stream says so plainly.

Many cameras (Hikvision, Dahua, Reolink) lock the account after a handful of failed logins, and the
owner's phone app with it. These tests count the connection attempts in the real test camera's log.
"""

from __future__ import annotations

import threading
import time

import pytest

from camrec.errors import AuthError, SourceError
from camrec.sources import capture as capture_mod
from camrec.sources.capture import AUTH_BACKOFF, BACKOFF_MAX, Capture, auth_backoff
from camrec.sources.hub import PacketHub
from camrec.sources.rtsp import RtspSource


def test_auth_backoff_grows_to_minutes_and_stays_there():
    waits = [auth_backoff(n) for n in range(1, 12)]
    assert waits == sorted(waits)
    assert waits[0] > BACKOFF_MAX * 5
    assert waits[-1] == AUTH_BACKOFF[-1] >= 300
    # Attempts in the first hour: far below a lock-out rate of several a minute.
    t, attempts = 0.0, 1
    while t + auth_backoff(attempts) < 3600:
        t += auth_backoff(attempts)
        attempts += 1
    assert attempts <= 12


def _capture(url: str, stop: threading.Event) -> Capture:
    return Capture("front", "main", lambda gen: RtspSource(url, open_timeout=5, read_timeout=2, generation=gen),
                   PacketHub("front/main"), stop, stall_limit=5.0)


def _connections(cam) -> int:
    return cam.log_text().count("EVENT client-connected")


def test_a_wrong_password_is_retried_a_few_times_a_minute(rtsp_camera_factory, monkeypatch):
    # The schedule at a quarter of its real length (the real one is checked above): 3.75 s, 7.5 s, ...
    monkeypatch.setattr(capture_mod, "AUTH_BACKOFF", tuple(w / 4 for w in AUTH_BACKOFF))
    assert auth_backoff(2) > 5.0  # the second wait is still longer than the capture's stall_limit
    locked = rtsp_camera_factory(auth="admin:right-password")
    missing = rtsp_camera_factory()  # a wrong path: an ordinary failure, retried quickly (the control)
    stop = threading.Event()
    wrong = _capture(f"rtsp://admin:wrong-password@127.0.0.1:{locked.port}/cam", stop)
    control = _capture(f"rtsp://127.0.0.1:{missing.port}/no-such-path", stop)
    wrong.start()
    control.start()
    try:
        time.sleep(6)
        status = wrong.status
        assert "wrong user or password" in (status.error or ""), status
        assert "401" in (status.error or "")
        assert "wrong-password" not in (status.error or "")
        assert status.retry_at is not None and status.retry_at > time.time()
        # A wait longer than stall_limit (5 s) is deliberate, not a hung thread: the watchdog must
        # stay fed all through it.
        assert status.waiting_until - status.last_progress > 5.0
        assert not wrong.stuck(status.waiting_until - 0.1)
    finally:
        stop.set()
        wrong.join(5)
        control.join(5)
    assert not wrong.is_alive()  # a stop request ends the long wait at once
    # 6 s: one attempt at 0 s and one at 3.75 s; the ordinary failure is retried at 0.5, 1, 2, 4, 6 s.
    assert 1 <= _connections(locked) <= 2, locked.log_tail()
    assert _connections(missing) >= 4, missing.log_tail()


def test_refused_credentials_raise_auth_error_and_right_ones_connect(rtsp_camera_factory):
    cam = rtsp_camera_factory(auth="admin:s3cret")
    with pytest.raises(AuthError) as info:
        RtspSource(f"rtsp://admin:nope@127.0.0.1:{cam.port}/cam", open_timeout=5, read_timeout=2).open()
    assert "wrong user or password" in info.value.message
    assert "nope" not in info.value.message
    with pytest.raises(AuthError):  # no credentials at all: the same plain words
        RtspSource(f"rtsp://127.0.0.1:{cam.port}/cam", open_timeout=5, read_timeout=2).open()
    src = RtspSource(cam.url("/cam"), open_timeout=5, read_timeout=2)
    try:
        assert src.open().width > 0
    finally:
        src.close()


def test_a_frozen_stream_says_no_video_for_n_seconds(rtsp_camera):
    src = RtspSource(rtsp_camera.url("/cam"), open_timeout=5, read_timeout=1)
    src.open()
    try:
        assert src.read() is not None
        rtsp_camera.freeze(True)
        with pytest.raises(SourceError) as info:
            for _ in range(10_000):  # drain what was buffered before the freeze
                src.read()
        assert "no video for 1 s" in info.value.message, info.value.message
        assert "Immediate exit" not in info.value.message
    finally:
        rtsp_camera.freeze(False)
        src.close()
