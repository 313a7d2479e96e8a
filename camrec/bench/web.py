"""`camrec bench web`: the owner's web app measured in Debian's chromium against the real server.

A store is written in a temporary directory through the recorder's own Store (age encryption,
SQLite index): a long H.264 clip (default 5 minutes of 1080p: a short ffmpeg testsrc2 encoding
whose packets are repeated with shifted timestamps through the recorder's fMP4 muxer, so nothing
is recorded live for 5 minutes), a short clip cut from the same packets, and a clip of --size
random bytes. `camrec web serve --store` serves it on 127.0.0.1 as a child process (so its CPU
time is its own, read from /proc) — or, with --tls, the recorder's own HTTPS server (as `camrec
run` starts it: self-signed certificate, a user, a login), so the server CPU includes TLS — and
chromium (Playwright, /usr/bin/chromium, headless, every
other destination sent to a proxy that does not exist) measures, each against a baseline taken in
the same run:

- page load: the camera list, from navigation to the list drawn, against a bare static file of
  the same server in the same browser;
- in-browser decryption: the --size clip decrypted by the event page's Download button, in MB/s,
  against camrec's own Python decryption of the same file (and `age -d` when installed);
- play to first frame: pressing Play on the long clip until the <video> has a frame to show,
  against the same for the short clip (streaming decryption should make the two alike);
- server CPU while streaming the long clip: the server process's CPU seconds from Play until the
  player has fetched and decrypted the whole clip, against the clip's duration.

Needs ffmpeg, PyAV, Playwright for Python and chromium (`pip install playwright`; Debian's
`chromium` package, never a browser download).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from camrec.errors import UsageError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=http://127.0.0.1:9", "--autoplay-policy=no-user-gesture-required"]
CAMERA = "bench"


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("web", help="the web app in chromium: page load, in-browser decryption, time to first "
                                   "frame, server CPU")
    s.add_argument("--size", default="100MB", metavar="SIZE", help="the clip decrypted in the browser (default 100MB)")
    s.add_argument("--clip-seconds", type=float, default=300.0, metavar="S",
                   help="length of the long clip (default 300)")
    s.add_argument("--resolution", default="1920x1080", metavar="WxH", help="of the clips (default 1920x1080)")
    s.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per measurement (median reported)")
    s.add_argument("--quick", action="store_true",
                   help="tiny sizes (1MB, a 6 s 320x180 clip, one run): checks that the benchmark works")
    s.add_argument("--tls", action="store_true",
                   help="serve with the recorder's own HTTPS server (self-signed certificate, a login) instead of "
                        "`camrec web serve --store`'s plain HTTP: the server CPU then includes TLS")
    s.add_argument("--chromium", default=CHROMIUM, metavar="PATH", help=f"the browser (default {CHROMIUM})")
    s.add_argument("--dir", metavar="DIR", help="where to put the store (default: a temporary directory)")
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.set_defaults(func=cmd_bench_web)


# --- the store ---------------------------------------------------------------------------------

FPS = 15


def _encode_loop(work: Path, width: int, height: int, seconds: float) -> Path:
    """A short H.264 test pattern (one keyframe a second), to be repeated into longer clips."""
    out = work / "loop.mp4"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(FPS),
           "-bsf:v", "h264_mp4toannexb", "-f", "mp4", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise UsageError(f"ffmpeg failed: {proc.stderr.strip()[-500:]}")
    return out


def _packets(loop: Path) -> tuple[Any, list[tuple[bytes, int, int, int, bool]]]:
    """(StreamInfo, packets as Annex B like the camera sources deliver them) of the loop file."""
    import av
    from av.bitstream import BitStreamFilterContext

    from camrec.sources.base import StreamInfo

    out: list[tuple[bytes, int, int, int, bool]] = []
    with av.open(str(loop)) as src:
        vs = src.streams.video[0]
        assert vs.time_base is not None
        info = StreamInfo("h264", vs.codec_context.width, vs.codec_context.height, Fraction(vs.time_base), float(FPS))
        annexb = BitStreamFilterContext("h264_mp4toannexb", vs)
        for packet in src.demux(vs):
            for p in annexb.filter(packet if packet.size else None):
                if p.pts is None or p.dts is None:
                    continue
                out.append((bytes(p), int(p.pts), int(p.dts), int(p.duration or 1), bool(p.is_keyframe)))
    return info, out


def _write_video_clip(store: Any, start: float, seconds: float, info: Any,
                      packets: list[tuple[bytes, int, int, int, bool]]) -> Any:
    """A clip of `seconds` through the recorder's muxer and Store, the loop repeated as needed."""
    from camrec.record.mux import FragmentedMp4Muxer
    from camrec.sources.base import MediaPacket

    tb = info.time_base
    loop_ticks = max(p[1] + p[3] for p in packets) - min(p[1] for p in packets)
    clip = store.open_clip(CAMERA, start)
    buf = bytearray()
    muxer = FragmentedMp4Muxer(info, buf.extend)
    offset = 0
    done = False
    while not done:
        for data, pts, dts, duration, key in packets:
            if (pts + offset) * tb >= seconds:
                done = True
                break
            muxer.add(MediaPacket(data, pts + offset, dts + offset, duration, key, 0.0, info))
        offset += loop_ticks
        if buf:
            clip.write(bytes(buf), start + float(offset * tb))
            buf.clear()
    muxer.close()
    if buf:
        clip.write(bytes(buf), start + seconds)
    return clip.close(start + seconds)


def _write_random_clip(store: Any, start: float, size: int) -> Any:
    clip = store.open_clip(CAMERA, start)
    left = size
    while left:
        n = min(left, 8 << 20)
        clip.write(os.urandom(n), start + 1 + (size - left) / size)
        left -= n
    return clip.close(start + 2)


def build_store(work: Path, width: int, height: int, long_seconds: float, size: int,
                log: Callable[[str], None]) -> dict[str, Any]:
    from camrec.crypto.keys import X25519Identity, identity_file_text
    from camrec.store.writer import Store

    owner = X25519Identity.generate()
    key = work / "owner.txt"
    key.write_text(identity_file_text(owner))
    log(f"encoding a {width}x{height} test pattern with ffmpeg")
    info, packets = _packets(_encode_loop(work, width, height, min(10.0, long_seconds)))
    root = work / "store"
    store = Store(root, [owner.recipient()], fsync_interval=3600)
    # Today, a few hours ago (the timeline shows a day; minutes apart so they never overlap).
    base = time.time() - 3 * 3600 if datetime.now().hour >= 4 else time.time() - 1200
    log(f"writing a {long_seconds:.0f} s clip, a 2 s clip and a {size / 1e6:.0f} MB clip into {root}")
    try:
        rows = {"short": _write_video_clip(store, base, 2.0, info, packets),
                "long": _write_video_clip(store, base + 60, long_seconds, info, packets),
                "random": _write_random_clip(store, base + 60 + long_seconds + 60, size)}
    finally:
        store.close()
    return {"root": root, "key": key, "owner": owner, "rows": rows}


# --- the server and the browser ------------------------------------------------------------------


USER, PASSWORD = "bench", "bench password of the web benchmark"


def serve_tls(root: str, port: str) -> None:
    """The child process of --tls: the recorder's web server (camrec/web/server.py, as `camrec run`
    starts it: HTTPS with a self-signed certificate, accounts, sessions) on 127.0.0.1:PORT."""
    import logging
    import signal

    from camrec.config.models import WebConfig
    from camrec.web.server import build_server

    logging.basicConfig(level=logging.WARNING)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait below
    settings = WebConfig(listen=(f"127.0.0.1:{port}",))
    server = build_server(settings, Path(root), status=None, audit=lambda entry: None)
    urls = server.start()
    print(f"serving {urls[0]}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


class _Server:
    """The web server as a child process on 127.0.0.1 (its CPU time is its own): `camrec web serve
    --store`, or with `tls` the recorder's HTTPS server with a user."""

    def __init__(self, root: Path, work: Path, tls: bool) -> None:
        env = dict(os.environ, CAMREC_AUDIT_LOG=str(work / "audit.jsonl"))  # the fetches' entries
        self.tls = tls
        if tls:
            import socket

            from camrec.web.accounts import Accounts

            Accounts(root / ".web").add(USER, PASSWORD)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            code = "import sys; from camrec.bench.web import serve_tls; serve_tls(*sys.argv[1:])"
            self.proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(port)], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, text=True)
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", "camrec", "web", "serve", "--store", str(root),
                                          "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                         text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(https?://127\.0\.0\.1:\d+)/", line)
        if not m:
            self.close()
            raise UsageError(f"the web server did not start: {line.strip()}")
        self.url = m.group(1)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _event_id(row: Any) -> str:
    from camrec.store import layout

    return str(row.path).rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)]


def _day(row: Any) -> str:
    return datetime.fromtimestamp(row.start).astimezone().strftime("%Y-%m-%d")


@contextlib.contextmanager
def _browser(chromium: str, profile: Path, tls: bool) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UsageError("Playwright for Python is not installed", hint="pip install playwright "
                         "(and Debian's chromium; never `playwright install`)") from None
    if not Path(chromium).exists():
        raise UsageError(f"no browser at {chromium}", hint="apt-get install chromium, or pass --chromium PATH")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=chromium, headless=True,
                                                       accept_downloads=True, args=CHROMIUM_ARGS,
                                                       ignore_https_errors=tls,
                                                       viewport={"width": 1280, "height": 900})
        context.set_default_timeout(300_000)
        try:
            yield context
        finally:
            context.close()


def _login(context: Any, base: str) -> None:
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("#login-user", USER)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#camera-list")
    page.close()


def _load_key(page: Any, key: Path) -> None:
    page.wait_for_function("() => document.getElementById('view').children.length > 0")
    if page.locator("#key-panel").is_hidden():
        page.click("#key-button")
    page.wait_for_selector("#key-panel", state="visible")
    page.set_input_files("#identity-file", str(key))
    page.wait_for_function("(n) => (document.getElementById('key-status')?.textContent || '').includes(n)",
                           arg=key.name)


def _open_event(page: Any, base: str, row: Any, key: Path) -> None:
    page.goto(f"{base}/event/{_event_id(row)}?camera={CAMERA}&day={_day(row)}")
    _load_key(page, key)
    page.wait_for_selector("#play:not([disabled])")


def _page_load(context: Any, base: str, repeat: int) -> dict[str, float]:
    page = context.new_page()
    app, bare = [], []
    for _ in range(repeat + 1):  # the first round warms the HTTP cache of the static files
        t0 = time.perf_counter()
        page.goto(base + "/static/LICENSES.txt", wait_until="load")
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page.goto(base + "/")
        page.wait_for_selector("#camera-list [data-camera]")
        app.append(time.perf_counter() - t0)
    page.close()
    return {"app_ms": statistics.median(app[1:]) * 1000, "bare_ms": statistics.median(bare[1:]) * 1000}


def _browser_decrypt(context: Any, base: str, row: Any, key: Path, repeat: int, size: int) -> list[float]:
    times = []
    for _ in range(repeat):
        page = context.new_page()
        _open_event(page, base, row, key)
        t0 = time.perf_counter()
        with page.expect_download() as dl:
            page.click("#download")
        path = dl.value.path()
        times.append(time.perf_counter() - t0)
        if Path(path).stat().st_size != size:
            raise UsageError("the browser's download has the wrong size")
        page.close()
    return times


def _first_frame(context: Any, base: str, row: Any, key: Path) -> tuple[float, Any]:
    """Seconds from Play to a frame the <video> can show; and the page (still streaming)."""
    page = context.new_page()
    _open_event(page, base, row, key)
    # The clock starts in the capture phase of the click on the document, before the page's handler.
    page.evaluate("""() => { const v = document.getElementById('player'); window.__firstFrame = null;
        document.addEventListener('click', () => { window.__t0 = performance.now(); }, {capture: true, once: true});
        v.requestVideoFrameCallback(() => { window.__firstFrame = performance.now() - window.__t0; }); }""")
    page.click("#play")
    page.wait_for_function("() => window.__firstFrame !== null")
    return page.evaluate("window.__firstFrame") / 1000, page


def _python_decrypt(src: Path, owner: Any, work: Path) -> float:
    from camrec.crypto.stream import decrypt_stream

    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as f, open(work / "python.out", "wb", buffering=0) as out:
        decrypt_stream(f, [owner], out)
    took = time.perf_counter() - t0
    (work / "python.out").unlink()
    return took


def _age_decrypt(src: Path, key: Path, work: Path) -> float | None:
    age = shutil.which("age")
    if age is None:
        return None
    t0 = time.perf_counter()
    subprocess.run([age, "-d", "-i", str(key), "-o", str(work / "age.out"), str(src)], check=True,
                   capture_output=True)
    took = time.perf_counter() - t0
    (work / "age.out").unlink()
    return took


def run_bench(work: Path, *, width: int, height: int, long_seconds: float, size: int, repeat: int,
              chromium: str, tls: bool, log: Callable[[str], None]) -> dict[str, Any]:
    built = build_store(work, width, height, long_seconds, size, log)
    rows, key, root = built["rows"], built["key"], built["root"]
    server = _Server(root, work, tls)
    try:
        log(f"serving the store at {server.url}; chromium: {chromium}")
        with _browser(chromium, work / "profile", tls) as context:
            if tls:
                _login(context, server.url)
            load = _page_load(context, server.url, repeat)
            log(f"page load: camera list {load['app_ms']:.0f} ms, bare file {load['bare_ms']:.0f} ms")

            random_file = root / rows["random"].path
            plain = size
            browser_s = statistics.median(_browser_decrypt(context, server.url, rows["random"], key, repeat, size))
            python_s = statistics.median(_python_decrypt(random_file, built["owner"], work) for _ in range(repeat))
            age_runs = [_age_decrypt(random_file, key, work) for _ in range(repeat)]
            age_s = statistics.median([t for t in age_runs if t is not None]) if None not in age_runs else None
            log(f"decryption: browser {plain / browser_s / 1e6:.0f} MB/s, python {plain / python_s / 1e6:.0f} MB/s")

            short_runs, long_runs, cpu = [], [], []
            for _ in range(repeat):
                t, page = _first_frame(context, server.url, rows["short"], key)
                short_runs.append(t)
                page.close()
                cpu0 = server.cpu_seconds()
                t0 = time.perf_counter()
                t, page = _first_frame(context, server.url, rows["long"], key)
                long_runs.append(t)
                page.wait_for_selector("[data-decrypted='1']")  # the whole clip fetched and decrypted
                streamed = time.perf_counter() - t0
                cpu.append((server.cpu_seconds() - cpu0, streamed))
                page.close()
            log(f"first frame: long clip {statistics.median(long_runs) * 1000:.0f} ms, "
                f"short {statistics.median(short_runs) * 1000:.0f} ms")
    finally:
        server.close()
    cpu_s = statistics.median(c for c, _ in cpu)
    stream_s = statistics.median(s for _, s in cpu)
    long_row = rows["long"]
    return {
        "server": "recorder HTTPS (TLS)" if tls else "camrec web serve --store (plain HTTP)",
        "resolution": f"{width}x{height}",
        "repeat": repeat,
        "page_load_ms": {"camera_list": round(load["app_ms"], 1), "bare_static_file": round(load["bare_ms"], 1),
                         "ratio": round(load["app_ms"] / load["bare_ms"], 2)},
        "decrypt": {"bytes": plain,
                    "browser_mb_per_s": round(plain / browser_s / 1e6, 1),
                    "python_mb_per_s": round(plain / python_s / 1e6, 1),
                    "age_mb_per_s": round(plain / age_s / 1e6, 1) if age_s else None,
                    "browser_vs_python": round(python_s / browser_s, 2),
                    "browser_vs_age": round(age_s / browser_s, 2) if age_s else None},
        "first_frame_ms": {"long_clip": round(statistics.median(long_runs) * 1000, 1),
                           "long_clip_seconds": long_seconds, "long_clip_bytes": long_row.size,
                           "short_clip": round(statistics.median(short_runs) * 1000, 1),
                           "ratio": round(statistics.median(long_runs) / statistics.median(short_runs), 2)},
        "server_cpu": {"cpu_seconds": round(cpu_s, 3), "streamed_in_seconds": round(stream_s, 2),
                       "per_clip_second": round(cpu_s / long_seconds, 5),
                       "percent_of_one_core_at_playback_speed": round(100 * cpu_s / long_seconds, 3),
                       "mb_served_per_cpu_second": round(long_row.size / max(cpu_s, 1e-3) / 1e6, 1)},
    }


def _parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{2,4})x(\d{2,4})", text)
    if not m or int(m[1]) % 2 or int(m[2]) % 2:
        raise UsageError(f"bad --resolution {text!r}: WIDTHxHEIGHT, even numbers")
    return int(m[1]), int(m[2])


def cmd_bench_web(args: argparse.Namespace) -> int:
    from camrec.timeparse import parse_size

    if shutil.which("ffmpeg") is None:
        raise UsageError("ffmpeg is not installed", hint="apt-get install ffmpeg")
    if args.quick:
        size, seconds, (width, height), repeat = 1_000_000, 6.0, (320, 180), 1
    else:
        try:
            size = parse_size(args.size)
        except ValueError as exc:
            raise UsageError(f"bad --size: {exc}") from None
        seconds, (width, height), repeat = args.clip_seconds, _parse_resolution(args.resolution), args.repeat
        if size <= 0 or seconds < 2 or repeat < 1:
            raise UsageError("--size must be positive, --clip-seconds at least 2, --repeat at least 1")

    def log(msg: str) -> None:
        print(f"camrec: {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="camrec-bench-web-", dir=args.dir) as tmp:
        result = run_bench(Path(tmp), width=width, height=height, long_seconds=seconds, size=size, repeat=repeat,
                           chromium=args.chromium, tls=args.tls, log=log)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    p, d, f, c = result["page_load_ms"], result["decrypt"], result["first_frame_ms"], result["server_cpu"]
    print(f"web app on loopback, {result['server']}, chromium, median of {repeat}")
    print(f"page load (camera list)      {p['camera_list']:8.0f} ms   bare static file {p['bare_static_file']:.0f} ms "
          f"({p['ratio']:.1f}x)")
    age_part = f", age -d {d['age_mb_per_s']:.0f} MB/s ({d['browser_vs_age']:.2f}x)" if d["age_mb_per_s"] else ""
    print(f"decrypt {d['bytes'] / 1e6:.0f} MB in the browser   {d['browser_mb_per_s']:8.1f} MB/s   "
          f"python {d['python_mb_per_s']:.0f} MB/s ({d['browser_vs_python']:.2f}x){age_part}")
    print(f"play to first frame, {f['long_clip_seconds']:.0f} s {result['resolution']} clip "
          f"{f['long_clip']:6.0f} ms   2 s clip {f['short_clip']:.0f} ms ({f['ratio']:.2f}x)")
    print(f"server CPU streaming it      {c['cpu_seconds']:8.2f} s    = "
          f"{c['percent_of_one_core_at_playback_speed']:.3f}% of a core over the clip's duration; "
          f"the whole clip was fetched in {c['streamed_in_seconds']:.1f} s")
    return 0
