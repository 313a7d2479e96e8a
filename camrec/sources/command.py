"""Sources that run a child process writing H.264 (Annex B) to its stdout: `exec:` and `picamera:`.

- `exec:<command line>` runs any program (split with shlex, never through a shell). It is set only
  in the config file, which only the owner (root) can write: no web or network path reaches it.
- `picamera:[?size=WxH&fps=F&camera=N]` runs `rpicam-vid` for a Raspberry Pi camera module; on a
  Pi 5 (no hardware encoder, libav does the encoding) it adds `--libav-format h264`.

Raw H.264 carries no timestamps: every access unit is stamped with the camera-clock time at which
its first byte arrived, in a 1/90000 time base, strictly increasing. The stream is cut into access
units here (at an AUD, or at SPS/PPS/SEI or a slice with first_mb_in_slice == 0 after a slice),
not by a demuxer, so that a silent child is noticed after `read_timeout` (select on the pipe)
instead of blocking a demuxer forever. The first keyframe is decoded once (PyAV) for the size and
frame rate.

The child runs in its own process group (a wrapper script's children included); close() sends the
group SIGTERM, then SIGKILL after 2 s, and reaps the child. Its stderr goes to the log, line by
line, redacted and rate-limited.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from camrec.errors import SourceError
from camrec.redact import redact
from camrec.source_spec import EXEC_HELP, PICAMERA_HELP, parse_picamera, split_exec
from camrec.sources.base import Clock, MediaPacket, StreamInfo, SystemClock

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
TICKS = 90000
MODEL_PATH = Path("/proc/device-tree/model")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the child's process group
READ_CHUNK = 1 << 16
MAX_BUFFER = 32 << 20  # bytes without a complete NAL unit: not H.264
STDERR_BURST = 20  # stderr lines logged at once; then one line per STDERR_REFILL seconds (some
# programs print a line per frame)
STDERR_REFILL = 10.0
MAX_STDERR_LINE = 500

# NAL unit types (H.264 Table 7-1)
NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 1, 5, 6, 7, 8, 9
# NAL units that begin a new access unit when they follow a picture's slices (H.264 7.4.1.2.3)
AU_STARTERS = frozenset((NAL_AUD, NAL_SEI, NAL_SPS, NAL_PPS, 14, 15, 16, 17, 18))


# Process groups of running children. A camrec that exits before a capture thread got to close()
# (a shutdown timeout, an unexpected exception) still takes its children with it; under systemd the
# unit's control group does that too, even after SIGKILL.
_live_groups: set[int] = set()
_live_lock = threading.Lock()


@atexit.register
def _kill_live_groups() -> None:
    with _live_lock:
        groups = list(_live_groups)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)


class _StderrLimiter:
    """A token bucket per source, shared by its successive child processes: a command that
    crashes every two seconds must not log its whole start-up banner every two seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens = float(STDERR_BURST)
        self.last = time.monotonic()
        self.dropped = 0

    def log(self, label: str, line: str) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(STDERR_BURST), self.tokens + (now - self.last) / STDERR_REFILL)
            self.last = now
            if self.tokens < 1:
                self.dropped += 1
                return
            self.tokens -= 1
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("%s: %d stderr lines not logged (too many)", label, dropped)
        log.info("%s: %s", label, redact(line))

    def flush(self, label: str) -> None:
        with self.lock:
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("%s: %d stderr lines not logged (too many)", label, dropped)


_limiters: dict[str, _StderrLimiter] = {}


def _stderr_limiter(source: str) -> _StderrLimiter:
    with _live_lock:
        return _limiters.setdefault(source, _StderrLimiter())


def pi_model(path: Path | None = None) -> str:
    """The board model from the device tree ("Raspberry Pi 5 Model B Rev 1.0"), or "" elsewhere."""
    try:
        return (path or MODEL_PATH).read_bytes().rstrip(b"\0\n").decode("utf-8", "replace")
    except OSError:
        return ""


def is_pi5(model: str) -> bool:
    """A Pi 5 class board (Pi 5, Pi 500, Compute Module 5): no H.264 hardware encoder."""
    return any(name in model for name in ("Raspberry Pi 5", "Raspberry Pi 500", "Compute Module 5"))


def picamera_command(source: str, model: str) -> tuple[list[str], int]:
    """The rpicam-vid argument list for a `picamera:` source on board `model`, and its frame rate."""
    try:
        opts = parse_picamera(source)
    except ValueError as exc:
        raise SourceError(f"bad picamera source {source!r}: {exc}", hint=PICAMERA_HELP) from None
    argv = ["rpicam-vid", "-t", "0", "-n", "--inline", "--codec", "h264",
            "--width", str(opts.width), "--height", str(opts.height), "--framerate", str(opts.fps),
            "--intra", str(opts.fps),  # an IDR every second: clips and the pre-roll start at one
            "-o", "-"]
    if opts.camera is not None:
        argv[1:1] = ["--camera", str(opts.camera)]
    if is_pi5(model):
        argv[-2:-2] = ["--libav-format", "h264"]
    return argv, opts.fps


def _resolve(program: str) -> str:
    if program.startswith("/"):
        if not os.access(program, os.X_OK) or os.path.isdir(program):
            raise SourceError(f"cannot run {program}: no such executable file")
        return program
    found = shutil.which(program)
    if found is None:
        raise SourceError(f"cannot run {program}: not found on PATH",
                          hint="install it, or give its absolute path in the source")
    return found


class AnnexBSplitter:
    """Cuts an H.264 Annex B byte stream into access units (one picture each, headers included).

    Correct for one slice per picture, and for any number of slices per picture when the encoder
    writes access unit delimiters (AUD). Arrival times follow the bytes: an access unit is stamped
    with the time of the read that brought its first byte.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._scan = 0  # where to look for the next start code (index into _buf)
        self._nal_start: int | None = None  # index of the current NAL's start code in _buf
        self._chunks: deque[tuple[int, float]] = deque()  # (end offset, arrival) per read
        self._au: list[bytes] = []
        self._au_has_slice = False
        self._au_key = False
        self._au_arrival = 0.0
        self.units: deque[tuple[bytes, bool, float]] = deque()  # complete access units

    def feed(self, data: bytes, arrival: float) -> None:
        self._buf += data
        self._chunks.append((self._base + len(self._buf), arrival))
        buf = self._buf
        while True:
            i = buf.find(b"\0\0\1", self._scan)
            if i < 0:
                self._scan = max(self._scan, len(buf) - 2)
                break
            if i + 5 > len(buf):  # the NAL header and the byte after it are not here yet
                self._scan = i
                break
            start = i - 1 if i > 0 and buf[i - 1] == 0 and (self._nal_start is None or i - 1 > self._nal_start) else i
            if self._nal_start is not None:
                self._au.append(bytes(buf[self._nal_start:start]))
            self._begin(buf[i + 3], buf[i + 4], start)
            self._nal_start = start
            self._scan = i + 3
        if self._nal_start is None and len(buf) > MAX_BUFFER:
            raise SourceError("the command's output is not H.264 (no start code in 32 MiB)")
        self._trim()

    def finish(self) -> None:
        """End of stream: the last NAL unit and access unit are complete."""
        if self._nal_start is not None and len(self._buf) > self._nal_start:
            self._au.append(bytes(self._buf[self._nal_start:]))
        self._nal_start = None
        self._emit()

    def _arrival_of(self, index: int) -> float:
        offset = self._base + index
        for end, arrival in self._chunks:
            if offset < end:
                return arrival
        return self._chunks[-1][1]

    def _trim(self) -> None:
        keep = self._nal_start if self._nal_start is not None else self._scan
        if keep > READ_CHUNK:
            del self._buf[:keep]
            self._base += keep
            self._scan -= keep
            if self._nal_start is not None:
                self._nal_start -= keep
        while len(self._chunks) > 1 and self._chunks[0][0] <= self._base:
            self._chunks.popleft()

    def _begin(self, header: int, after: int, index: int) -> None:
        """A NAL unit starts at `index`: does it start a new access unit?"""
        kind = header & 0x1F
        slice_ = kind in (NAL_SLICE, NAL_IDR)
        # first_mb_in_slice is the slice header's first field, ue(v): 0 is the single bit "1".
        if self._au_has_slice and (kind in AU_STARTERS or (slice_ and after & 0x80)):
            self._emit()
        if not self._au:
            self._au_arrival = self._arrival_of(index)
        if slice_:
            self._au_has_slice = True
            self._au_key = self._au_key or kind == NAL_IDR

    def _emit(self) -> None:
        if self._au and self._au_has_slice:
            self.units.append((b"".join(self._au), self._au_key, self._au_arrival))
        self._au = []
        self._au_has_slice = self._au_key = False


def parameter_sets(unit: bytes) -> bytes:
    """The SPS and PPS NAL units of an access unit (Annex B), for StreamInfo.extradata."""
    out = []
    for part in unit.split(b"\0\0\1")[1:]:
        if part and part[0] & 0x1F in (NAL_SPS, NAL_PPS):
            out.append(b"\0\0\0\1" + part.rstrip(b"\0"))
    return b"".join(out)


def _stream_facts(unit: bytes) -> tuple[int, int, float]:
    """Width, height and (0 when unknown) frame rate from decoding one keyframe access unit."""
    try:
        decoder: Any = av.CodecContext.create("h264", "r")
        frames = list(decoder.decode(av.Packet(unit)))
        frames += list(decoder.decode(None))
    except av.error.FFmpegError as exc:
        raise SourceError(f"the command's first keyframe does not decode as H.264: {exc}") from None
    if not frames:
        raise SourceError("the command's first keyframe does not decode as H.264")
    rate = decoder.framerate
    fps = float(rate) if rate and 0 < float(rate) <= 240 else 0.0
    return frames[0].width, frames[0].height, fps


def sniff_format(head: bytes) -> str:
    """h264 (Annex B), mpegts, mjpeg, unknown, or pending (only zero bytes so far), from the first
    bytes of a stream."""
    if head[:1] == b"\0":
        zeros = len(head) - len(head.lstrip(b"\0"))
        if zeros == len(head):
            return "pending"
        return "h264" if zeros >= 2 and head[zeros] == 1 else "unknown"
    if head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47"):
        return "mpegts"
    if head.startswith(b"\xff\xd8"):
        return "mjpeg"
    return "unknown"


class CommandSource:
    """A child process writing H.264 Annex B to stdout, read as a camera stream."""

    def __init__(self, source: str, *, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 generation: int = 0, clock: Clock | None = None, input_format: str | None = None,
                 model: str | None = None) -> None:
        self.source = source
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.generation = generation
        self.clock = clock or SystemClock()
        self.nominal_fps = 0
        if input_format not in (None, "h264"):
            raise SourceError(f"{input_format} from a command is not supported yet",
                              hint="make the command write H.264 (Annex B) to stdout")
        if source.startswith("picamera:"):
            self.argv, self.nominal_fps = picamera_command(source, pi_model() if model is None else model)
            self.label = "rpicam-vid"
        else:
            try:
                self.argv = split_exec(source)
            except ValueError as exc:
                raise SourceError(f"bad exec source: {exc}", hint=EXEC_HELP) from None
            self.label = os.path.basename(self.argv[0])
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: StreamInfo | None = None
        self._splitter = AnnexBSplitter()
        self._eof = False
        self._stderr_thread: threading.Thread | None = None
        self.last_stderr = ""  # redacted
        self._last_pts = -1
        self._origin = 0.0
        self._ticks = TICKS // 15

    # --- process --------------------------------------------------------------------------

    def open(self) -> StreamInfo:
        program = _resolve(self.argv[0])
        try:
            self.proc = subprocess.Popen([program, *self.argv[1:]], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True, close_fds=True, bufsize=0)
        except OSError as exc:
            raise SourceError(f"cannot run {self.label}: {exc.strerror or exc}") from None
        with _live_lock:
            _live_groups.add(self.proc.pid)
        log.debug("started %s (pid %d)", redact(" ".join(self.argv)), self.proc.pid)
        assert self.proc.stderr is not None
        self._stderr_thread = threading.Thread(target=self._log_stderr, args=(self.proc.stderr,),
                                               name=f"stderr-{self.label}", daemon=True)
        self._stderr_thread.start()
        try:
            return self._first_keyframe()
        except BaseException:
            self.close()
            raise

    def _first_keyframe(self) -> StreamInfo:
        deadline = time.monotonic() + self.open_timeout
        head = b""
        while True:
            units = self._splitter.units
            while units and not units[0][1]:
                units.popleft()  # pictures before the first keyframe can't be decoded
            if units:
                break
            if self._eof:
                raise SourceError(self._exit_reason("before sending a keyframe"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SourceError(f"{self.label} sent no keyframe within {self.open_timeout:g} s")
            data = self._read_chunk(remaining)
            if data is None:
                continue
            if len(head) < 200:
                head += data[:200]
                kind = sniff_format(head)
                if kind in ("mpegts", "mjpeg"):
                    raise SourceError(f"{self.label} writes {kind.upper()}: not supported yet from a command",
                                      hint="make the command write H.264 (Annex B) to stdout")
                if kind == "unknown" and len(head) >= 4:
                    raise SourceError(f"{self.label} does not write H.264 (Annex B) to stdout")
        unit, _key, arrival = self._splitter.units[0]
        width, height, fps = _stream_facts(unit)
        fps = fps or float(self.nominal_fps) or 15.0
        self._ticks = max(1, round(TICKS / fps))
        self._origin = arrival
        extradata = parameter_sets(unit) or None
        self.info = StreamInfo(codec="h264", width=width, height=height, time_base=TIME_BASE, fps=fps,
                               extradata=extradata, generation=self.generation)
        return self.info

    def _exit_reason(self, when: str) -> str:
        """"rpicam-vid exited (status 255) before …: <its last stderr line>" (the why, when it said)."""
        code = None
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # stdout closed, but still running
                code = self.proc.wait(timeout=1.0)
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=0.5)  # its last words
        status = "still running" if code is None else f"status {code}"
        reason = f"{self.label} closed its output ({status}) {when}"
        if code is not None:
            reason = f"{self.label} exited ({status}) {when}"
        return f"{reason}: {self.last_stderr}" if self.last_stderr else reason

    def _read_chunk(self, timeout: float) -> bytes | None:
        """One read from the pipe; None when `timeout` passed without data. Sets _eof at the end."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        data = os.read(fd, READ_CHUNK)
        if not data:
            self._eof = True
            self._splitter.finish()
            return b""
        self._splitter.feed(data, self.clock.monotonic())
        return data

    def _log_stderr(self, pipe: IO[bytes]) -> None:
        # Buffered here (Popen's pipes are raw with bufsize=0): a raw readline reads byte by byte.
        reader = io.BufferedReader(pipe)  # type: ignore[type-var]
        limiter = _stderr_limiter(self.source)
        try:
            for raw in iter(reader.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()[:MAX_STDERR_LINE]
                if line:
                    self.last_stderr = redact(line)
                    limiter.log(self.label, line)
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            reader.close()
            limiter.flush(self.label)

    # --- Source protocol ------------------------------------------------------------------

    def read(self) -> MediaPacket | None:
        assert self.info is not None, "open() first"
        deadline = time.monotonic() + self.read_timeout
        units = self._splitter.units
        while not units:
            if self._eof:
                return None  # the child exited: a disconnect
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SourceError(f"no video for {self.read_timeout:g} s from {self.label}")
            self._read_chunk(remaining)
        data, key, arrival = units.popleft()
        pts = round((arrival - self._origin) * TICKS)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        if self._last_pts >= 0 and 0 < pts - self._last_pts < 4 * self._ticks:
            self._ticks = pts - self._last_pts  # the spacing of arrivals is the best measure
        self._last_pts = pts
        return MediaPacket(data=data, pts=pts, dts=pts, duration=self._ticks, keyframe=key,
                           arrival=arrival, stream=self.info)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own group
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s of SIGTERM; killing it", self.label, KILL_GRACE)
        # Whatever the leader did, nothing of the group may outlive the connection.
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        with _live_lock:
            _live_groups.discard(pgid)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr_thread is not None:
            # The group is gone, so stderr is at its end (the thread closes it), unless a
            # grandchild left the group holding it: then the daemon thread is left to it.
            self._stderr_thread.join(timeout=1.0)
        log.debug("%s stopped (status %s)", self.label, proc.returncode)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
