"""A real RTSP camera on 127.0.0.1 for tests: controller class and pytest fixtures.

``RtspCamera`` runs ``tests/support/rtsp_server.py`` (GStreamer's gst-rtsp-server) under Debian's
``/usr/bin/python3`` — the interpreter that has PyGObject — and drives its faults::

    with RtspCamera({"/cam": media.main, "/cam_sub": media.sub}) as cam:
        url = cam.url("/cam")          # rtsp://127.0.0.1:PORT/cam (with user:pass@ if auth)
        cam.freeze(True)               # TCP up, no frames
        cam.drop_clients()             # camera reboot: every connection closed
        cam.restart()                  # server down and up again on the same port

Each RTSP session starts at frame 0 of its clip and the clip loops forever in real time, so the
clip's ``motion_truth.json`` lines up with seconds since the client connected.

Fixtures (register with ``pytest_plugins = ["tests.support.camera"]`` in a conftest.py):

- ``test_media`` (session): ``CameraMedia`` — 30 s 640x360 main clip + 320x180 sub-stream with
  motion at 8–12 s and 20–23 s, cached across runs in pytest's cache dir (or ``$CAMREC_TEST_MEDIA_DIR``).
- ``early_media`` (session): like ``test_media`` but 22 s with motion at 4–7 s and 15–18 s, for
  tests that wait for clips.
- ``rtsp_camera`` (function): a started ``RtspCamera`` serving ``test_media`` as ``/cam`` and
  ``/cam_sub``; stopped at teardown.
- ``rtsp_camera_factory`` (function): ``make(media=None, *, port=None, auth=None, start=True)``
  for cameras with other clips, auth or a fixed port; all stopped at teardown.

Tests are skipped with the reason when ffmpeg or the GStreamer RTSP stack is missing; set
``CAMREC_REQUIRE_RTSP=1`` (CI) to make that a failure instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.media import CameraMedia, ffmpeg_available, make_camera_media

HOST = "127.0.0.1"  # loopback only, always
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
# The interpreter with python3-gi (Debian's), not the one running the tests.
GST_PYTHON = os.environ.get("CAMREC_TEST_GST_PYTHON", "/usr/bin/python3")
# First start on a fresh machine builds GStreamer's plugin registry (~/.cache/gstreamer-1.0): slow.
STARTUP_TIMEOUT = 30.0
EVENT_TIMEOUT = 5.0

__all__ = [
    "RtspCamera",
    "RtspCameraError",
    "early_media",
    "free_port",
    "media_cache_dir",
    "require_rtsp_camera",
    "rtsp_camera",
    "rtsp_camera_factory",
    "rtsp_server_unavailable_reason",
    "test_media",
]


class RtspCameraError(RuntimeError):
    """The camera server failed to start, died, or did not acknowledge a command."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).

    ``RtspCamera`` does not need it (the server binds port 0 itself and reports the port, which
    has no race); it is for tests that need a port number before anything listens on it, e.g.
    "camera not there yet" or "connection refused".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["GST_DEBUG_NO_COLOR"] = "1"
    return env


@functools.cache
def rtsp_server_unavailable_reason() -> str | None:
    """Why the RTSP camera cannot run here (None if it can). Checked once per test run."""
    if not ffmpeg_available():
        return "ffmpeg not found (needed to make test media; apt-get install ffmpeg)"
    if not os.access(GST_PYTHON, os.X_OK):
        return f"{GST_PYTHON} not found (the RTSP test camera needs Debian's python3 with python3-gi)"
    try:
        proc = subprocess.run(
            [GST_PYTHON, "-I", str(SERVER_SCRIPT), "--check"],
            capture_output=True, text=True, timeout=120, env=_server_env(), stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {GST_PYTHON}: {e}"
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        return (
            f"RTSP test camera unavailable: {detail[-1] if detail else proc.returncode} "
            "(apt-get install the packages in tests/support/APT_PACKAGES)"
        )
    return None


def require_rtsp_camera() -> None:
    """Skip the calling test if the camera cannot run (fail instead with CAMREC_REQUIRE_RTSP=1)."""
    reason = rtsp_server_unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CAMREC_REQUIRE_RTSP", "") not in ("", "0"):
        pytest.fail(f"CAMREC_REQUIRE_RTSP is set but {reason}", pytrace=False)
    pytest.skip(reason)


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaps the process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _finalize(state: dict[str, object]) -> None:
    """Last-resort cleanup (garbage collection or interpreter exit) — must not reference the camera."""
    proc = state.get("proc")
    if isinstance(proc, subprocess.Popen):
        _terminate(proc, 2.0)
    fd = state.get("stdin_w")
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
    tmpdir = state.get("tmpdir")
    if isinstance(tmpdir, str):
        shutil.rmtree(tmpdir, ignore_errors=True)


class RtspCamera:
    """Controller for one RTSP camera server process serving ``media`` (mount → MP4 path).

    ``port=None`` lets the server pick a free port at the first ``start()``; ``restart()`` and later
    starts keep that port. ``auth="user:pass"`` requires RTSP digest authentication
    (``auth_method="basic"`` for basic); ``url()`` then embeds the credentials.

    The server's output (``READY``/``EVENT`` lines, GStreamer warnings) goes to ``log_path``, kept
    across restarts; ``log_dir`` chooses where (default: a temporary directory removed when the
    camera object goes away). Fault methods wait until the server has acted on them.
    """

    def __init__(
        self,
        media: Mapping[str, str | os.PathLike[str]],
        port: int | None = None,
        auth: str | None = None,
        *,
        auth_method: str = "digest",
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if not media:
            raise ValueError("media must map at least one mount to a clip")
        self.media: dict[str, Path] = {}
        for mount, path in media.items():
            if not mount.startswith("/") or "=" in mount:
                raise ValueError(f"mount must look like '/cam', got {mount!r}")
            if not Path(path).is_file():
                raise FileNotFoundError(path)
            self.media[mount] = Path(path).resolve()
        if auth is not None and ":" not in auth:
            raise ValueError("auth must be 'user:pass'")
        if auth_method not in ("digest", "basic"):
            raise ValueError(f"auth_method must be 'digest' or 'basic', got {auth_method!r}")
        self.auth = auth
        self.auth_method = auth_method
        self.startup_timeout = startup_timeout
        self._port = port
        self._frozen = False
        self._closed = False
        self._log_start = 0  # offset in the log where the current server process's output begins
        # Process state lives in a dict so the finalizer can clean up without keeping `self` alive.
        self._state: dict[str, object] = {}
        if log_dir is None:
            tmpdir = tempfile.mkdtemp(prefix="camrec-rtsp-")
            self._state["tmpdir"] = tmpdir
            log_dir = tmpdir
        self.log_path = Path(log_dir) / f"rtsp-camera-{id(self):x}.log"
        self._finalizer = weakref.finalize(self, _finalize, self._state)

    # -- state -------------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The TCP port (known after the first start when it was chosen automatically)."""
        return self._port

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        proc = self._state.get("proc")
        return proc if isinstance(proc, subprocess.Popen) else None

    def url(self, mount: str = "/cam", *, credentials: bool = True) -> str:
        """``rtsp://[user:pass@]127.0.0.1:PORT/mount``; ``credentials=False`` leaves them out."""
        if self._port is None:
            raise RtspCameraError("camera not started yet: port unknown")
        if not mount.startswith("/"):
            mount = "/" + mount
        userinfo = ""
        if self.auth and credentials:
            user, password = self.auth.split(":", 1)
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"rtsp://{userinfo}{HOST}:{self._port}{mount}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RtspCamera:
        """Start the server and wait until it listens. Returns self."""
        if self._closed:
            raise RtspCameraError("camera closed")
        if self.running:
            raise RtspCameraError("camera already running")
        self._reap()
        cmd = [GST_PYTHON, "-I", str(SERVER_SCRIPT), "--port", str(self._port or 0)]
        for mount, path in self.media.items():
            cmd += ["--mount", f"{mount}={path}"]
        if self.auth:
            cmd += ["--auth", self.auth, "--auth-method", self.auth_method]
        # The server exits when we die, even by SIGKILL: it watches our pid and the pipe on its stdin.
        cmd += ["--parent-pid", str(os.getpid()), "--exit-on-stdin-eof"]

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stdin_r, stdin_w = os.pipe()  # non-inheritable: other children won't keep it open
        try:
            with open(self.log_path, "ab") as log:
                self._log_start = log.tell()
                proc = subprocess.Popen(
                    cmd, stdin=stdin_r, stdout=log, stderr=subprocess.STDOUT, env=_server_env(),
                    # Own session: a Ctrl-C in the terminal reaches pytest (which stops us), not the server.
                    start_new_session=True,
                )  # fmt: skip
        except BaseException:
            os.close(stdin_w)
            raise
        finally:
            os.close(stdin_r)
        self._state["proc"] = proc
        self._state["stdin_w"] = stdin_w
        self._frozen = False

        deadline = time.monotonic() + self.startup_timeout
        while True:
            m = re.search(r"^\S+ READY port=(\d+)", self._log_text_current(), re.MULTILINE)
            if m:
                self._port = int(m.group(1))
                return self
            if proc.poll() is not None:
                self._reap()
                raise RtspCameraError(f"RTSP camera exited with {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RtspCameraError(f"RTSP camera not ready after {self.startup_timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (clients see their connections closed). Safe to call repeatedly."""
        proc = self._proc
        if proc is not None:
            _terminate(proc, timeout)
        self._reap()
        self._frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port (a camera power cycle)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop for good and remove the temporary log directory (if the camera made one)."""
        self._closed = True
        self._finalizer()

    def _reap(self) -> None:
        self._state.pop("proc", None)
        fd = self._state.pop("stdin_w", None)
        if isinstance(fd, int):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> RtspCamera:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RtspCamera {state} port={self._port} mounts={list(self.media)}>"

    # -- faults ------------------------------------------------------------------------------

    def drop_clients(self) -> int:
        """Close every client connection now (a camera reboot); returns how many were dropped."""
        line = self._signal_and_wait(signal.SIGUSR1, r"EVENT drop clients=(\d+)")
        m = re.search(r"clients=(\d+)", line)
        return int(m.group(1)) if m else 0

    def freeze(self, on: bool = True) -> None:
        """Freeze (``on=True``) or thaw the video of every mount; connections stay open.

        After a thaw the stream resumes at the next keyframe (within one GOP) and at the clip
        position the camera's clock has reached meanwhile.
        """
        if on == self._frozen:
            return
        self._signal_and_wait(signal.SIGUSR2, rf"EVENT freeze {'on' if on else 'off'}")
        self._frozen = on

    # -- log ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the server printed, across restarts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _log_text_current(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def sessions(self, mount: str | None = None) -> int:
        """How many RTSP sessions (client pipelines) were created, across restarts.

        Useful to assert that a recorder reconnected: the count grows with every new session.
        """
        pattern = rf"EVENT session mount={re.escape(mount)}$" if mount else r"EVENT session mount="
        return len(re.findall(pattern, self.log_text(), re.MULTILINE))

    def event_times(self, pattern: str) -> list[float]:
        """When the server logged each line ``<time> <pattern>``, across restarts, in order: seconds
        of the day on the server's clock (millisecond resolution). For gaps between events."""
        times = []
        for m in re.finditer(rf"^(\d\d):(\d\d):(\d\d)\.(\d{{3}}) {pattern}", self.log_text(), re.MULTILINE):
            h, mi, sec, ms = (int(g) for g in m.groups())
            times.append(h * 3600 + mi * 60 + sec + ms / 1000)
        return times

    def wait_for_sessions(self, count: int, mount: str | None = None, timeout: float = 15.0) -> None:
        """Wait until ``sessions(mount) >= count``; raises RtspCameraError on timeout."""
        deadline = time.monotonic() + timeout
        while self.sessions(mount) < count:
            if time.monotonic() > deadline:
                raise RtspCameraError(
                    f"only {self.sessions(mount)} of {count} sessions after {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _signal_and_wait(self, signum: int, pattern: str) -> str:
        """Send a signal and wait for the server's acknowledgement line; returns that line."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RtspCameraError("camera not running")
        regex = re.compile(rf"^\S+ {pattern}$", re.MULTILINE)
        before = len(regex.findall(self._log_text_current()))
        proc.send_signal(signum)
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            found = regex.findall(self._log_text_current())
            if len(found) > before:
                match = list(regex.finditer(self._log_text_current()))[-1]
                return match.group(0)
            if proc.poll() is not None:
                raise RtspCameraError(f"camera died:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RtspCameraError(f"no acknowledgement for signal {signum}:\n{self.log_tail()}")
            time.sleep(0.01)


# -- pytest fixtures -----------------------------------------------------------------------------


def media_cache_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("CAMREC_TEST_MEDIA_DIR")
    if env:
        return Path(env)
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("camrec-test-media"))
    return tmp_path_factory.mktemp("camrec-test-media")


@pytest.fixture(scope="session")
def test_media(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CameraMedia:
    """30 s 640x360@15 main clip + 320x180 sub-stream; motion only at 8–12 s and 20–23 s."""
    if not ffmpeg_available():
        _skip_or_fail("ffmpeg not found (needed to make test media)")
    return make_camera_media(media_cache_dir(request.config, tmp_path_factory))


@pytest.fixture(scope="session")
def early_media(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CameraMedia:
    """22 s 640x360@15 main clip + 320x180 sub-stream; motion only at 4–7 s and 15–18 s.

    Clips come sooner after a connect than with ``test_media`` (first event at 8 s), still later than
    a 3 s pre-roll plus a 1 s GOP; the two events are 11 s apart with ~3 s between their clips (pre-
    and post-roll up to 3 s and 2 s), and the loop's next event (26 s) is far from the second clip."""
    if not ffmpeg_available():
        _skip_or_fail("ffmpeg not found (needed to make test media)")
    return make_camera_media(media_cache_dir(request.config, tmp_path_factory), duration=22.0,
                             motion_windows=((4.0, 7.0), (15.0, 18.0)))


@pytest.fixture
def rtsp_camera_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., RtspCamera]]:
    """``make(media=None, *, port=None, auth=None, start=True) -> RtspCamera``; all stopped at teardown.

    ``media`` is a mount → clip mapping or a ``CameraMedia`` (default: ``test_media``).
    """
    require_rtsp_camera()
    cameras: list[RtspCamera] = []

    def make(
        media: Mapping[str, str | os.PathLike[str]] | CameraMedia | None = None,
        *,
        port: int | None = None,
        auth: str | None = None,
        start: bool = True,
    ) -> RtspCamera:
        if media is None:
            media = request.getfixturevalue("test_media")
        mounts = media.mounts if isinstance(media, CameraMedia) else media
        cam = RtspCamera(mounts, port=port, auth=auth, log_dir=tmp_path / "rtsp-camera")
        cameras.append(cam)
        if start:
            cam.start()
        return cam

    yield make
    for cam in cameras:
        cam.close()
        # pytest shows a test's teardown output only when it failed: the camera's side of the story.
        print(f"--- RTSP camera log {cam.log_path} ---\n{cam.log_tail(40)}")


@pytest.fixture
def rtsp_camera(rtsp_camera_factory: Callable[..., RtspCamera]) -> RtspCamera:
    """A running camera: ``test_media`` as ``/cam`` (640x360) and ``/cam_sub`` (320x180)."""
    return rtsp_camera_factory()
