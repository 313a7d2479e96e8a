"""Test support for camrec: a real RTSP camera on 127.0.0.1 and synthetic test media.

- ``tests.support.media``: deterministic H.264 test clips with motion ground truth (ffmpeg CLI).
- ``tests.support.camera``: ``RtspCamera`` controller and the ``test_media`` / ``rtsp_camera`` /
  ``rtsp_camera_factory`` pytest fixtures (register with ``pytest_plugins = ["tests.support.camera"]``).
- ``tests.support.web_browser``: Debian's chromium through Playwright for the web app's tests (launch
  flags, request capture, the key panel, pixels of an <img> or <video>).
- ``tests.support.rtsp_server``: the server process itself (GStreamer gst-rtsp-server); it runs under
  Debian's ``/usr/bin/python3`` (python3-gi), never under the test interpreter, so nothing here
  imports it.

This package must stay light to import: no GStreamer, no ffmpeg calls at import time.
"""

try:  # let pytest rewrite asserts in the helpers even when they are imported before the plugin
    import pytest

    pytest.register_assert_rewrite("tests.support.camera", "tests.support.media")
except ImportError:  # media.py is also usable without pytest
    pass
