#!/usr/bin/python3
"""A real RTSP "IP camera" on 127.0.0.1 for camrec's tests (GStreamer gst-rtsp-server).

Runs under Debian's /usr/bin/python3, which has PyGObject (python3-gi); the test interpreter
usually has not. The pytest side (tests/support/camera.py) starts it as a subprocess. Debian
packages: see tests/support/APT_PACKAGES (qtdemux and rtph264pay come from -good, h264parse from
-bad, the RTSP server library from gir1.2-gst-rtsp-server-1.0).

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 \\
        --mount /cam=main.mp4 --mount /cam_sub=sub.mp4 [--auth user:pass [--auth-method basic]]
    ffprobe -rtsp_transport tcp rtsp://127.0.0.1:8554/cam

Every mount is a never-ending LIVE stream, like a camera: the MP4's H.264 access units (SPS/PPS in
front of every IDR) are pushed into a live appsrc at the clip's frame rate, paced by the wall clock
and timestamped on arrival, so timestamps only ever increase, and the clip wraps around at its end.
Media are not shared: every RTSP session gets its own pipeline that starts at frame 0 of the clip,
so the clip's motion ground truth lines up with "seconds since this client connected".

Faults, by signal:
  SIGUSR1   camera reboot: every client connection is closed at once.
  SIGUSR2   toggle freeze: no more frames, but TCP and the RTSP session stay up (the client only
            notices through its read timeout). On thaw, the stream resumes at the next keyframe;
            the clip position kept advancing meanwhile, as a camera's clock would.
  SIGTERM, SIGINT   clean shutdown. The port can be bound again at once (SO_REUSEADDR).

Protocol with the controller (stdout, one line each, flushed):
  READY port=<port> pid=<pid>           listening (printed once, after the signal handlers are set)
  EVENT client-connected                a TCP connection was accepted
  EVENT session mount=<mount>           a new media (session pipeline) was created for a mount
  EVENT drop clients=<n>                SIGUSR1 handled
  EVENT freeze on|off                   SIGUSR2 handled
  EVENT stop                            shutting down
Anything else (including GStreamer's own warnings on stderr) is informational.

--parent-pid P makes the server exit when P goes away, and --exit-on-stdin-eof when its stdin
reaches end-of-file (the controller holds the write end of a pipe): either way no server outlives a
crashed or killed test run.
"""

import argparse
import os
import signal
import sys
import threading
import time

# Loopback only: the test camera must never be reachable from the network.
ADDRESS = "127.0.0.1"
REQUIRED_ELEMENTS = ("appsrc", "appsink", "filesrc", "qtdemux", "h264parse", "rtph264pay")


def log(*parts):
    now = time.time()  # milliseconds: tests measure the gaps between events (RtspCamera.event_times)
    print(f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}", *parts, flush=True)


def import_gst():
    """Import GStreamer's bindings; raises ImportError/ValueError when they are missing."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    return GLib, Gst, GstRtsp, GstRtspServer


def check():
    """--check: exit 0 if everything the server needs is installed, else print why and exit 1."""
    try:
        _, Gst, _, _ = import_gst()
    except (ImportError, ValueError) as e:
        print(f"GStreamer RTSP server bindings unavailable: {e}")
        return 1
    Gst.init(None)
    missing = [e for e in REQUIRED_ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"missing GStreamer elements: {', '.join(missing)}")
        return 1
    print(f"ok: {Gst.version_string()}")
    return 0


class Clip:
    """An MP4's H.264 stream held in memory as byte-stream access units, starting on a keyframe."""

    def __init__(self, Gst, path):
        pipe = Gst.parse_launch(
            "filesrc name=file ! qtdemux ! h264parse config-interval=-1 ! "
            "video/x-h264,stream-format=byte-stream,alignment=au ! "
            "appsink name=sink sync=false max-buffers=0"
        )
        pipe.get_by_name("file").set_property("location", path)
        sink = pipe.get_by_name("sink")
        pipe.set_state(Gst.State.PLAYING)
        aus, caps = [], None
        while True:
            sample = sink.emit("pull-sample")  # None at end-of-stream (or on error)
            if sample is None:
                break
            caps = sample.get_caps()
            buf = sample.get_buffer()
            aus.append((buf.extract_dup(0, buf.get_size()), not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        bus_error = pipe.get_bus().pop_filtered(Gst.MessageType.ERROR)
        pipe.set_state(Gst.State.NULL)
        if bus_error is not None:
            raise SystemExit(f"{path}: {bus_error.parse_error()[0].message}")
        if not any(key for _, key in aus):
            raise SystemExit(f"{path}: no H.264 keyframe found")
        first_key = next(i for i, (_, key) in enumerate(aus) if key)
        self.aus = aus[first_key:]
        s = caps.get_structure(0)
        ok, num, den = s.get_fraction("framerate")
        self.fps_num, self.fps_den = (num, den) if ok and num > 0 else (15, 1)
        self.width, self.height = s.get_int("width")[1], s.get_int("height")[1]

    def __str__(self):
        keys = sum(key for _, key in self.aus)
        size = sum(len(data) for data, _ in self.aus)
        return (
            f"{len(self.aus)} frames, {self.width}x{self.height} @ {self.fps_num}/{self.fps_den} fps, "
            f"{keys} keyframes, {size / 1e6:.1f} MB"
        )


class Feeder(threading.Thread):
    """Feeds one session's appsrc in real time, looping the clip, until the session goes away."""

    def __init__(self, Gst, mount, appsrc, clip, frozen):
        super().__init__(daemon=True, name=f"feeder{mount}")
        self.Gst, self.appsrc, self.clip, self.frozen = Gst, appsrc, clip, frozen
        self.stop = threading.Event()
        self.playing = threading.Event()

    def run(self):
        Gst, aus = self.Gst, self.clip.aus
        period = self.clip.fps_den / self.clip.fps_num
        # A live appsrc asks for data only once its pipeline runs; frame 0 must not be lost before.
        while not self.playing.wait(0.05):
            if self.stop.is_set():
                return
        index, need_key = 0, True
        t_next = time.monotonic()
        while not self.stop.is_set():
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:  # far behind (machine suspended or starved): resync, don't burst
                t_next = time.monotonic()
            t_next += period
            data, key = aus[index % len(aus)]
            index += 1
            if self.frozen.is_set():
                need_key = True  # time passes while frozen; resume on a keyframe like a camera
                continue
            if need_key and not key:
                continue
            need_key = False
            ret = self.appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data))
            if ret != Gst.FlowReturn.OK:  # FLUSHING once the session is torn down
                return


def make_factory(GstRtspServer, Gst, mount, clip, frozen):
    factory = GstRtspServer.RTSPMediaFactory()
    caps = (
        f"video/x-h264,stream-format=byte-stream,alignment=au,width={clip.width},"
        f"height={clip.height},framerate={clip.fps_num}/{clip.fps_den}"
    )
    # do-timestamp: buffers are stamped with the pipeline clock on arrival -> live, monotonic PTS.
    # config-interval=-1: SPS/PPS are sent in-band before every IDR, as cameras do.
    factory.set_launch(
        f'( appsrc name=src is-live=true do-timestamp=true format=time max-bytes=8000000 caps="{caps}" '
        "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(False)  # one pipeline per session, each starting at frame 0

    def on_media_configure(_factory, media):
        appsrc = media.get_element().get_by_name("src")
        feeder = Feeder(Gst, mount, appsrc, clip, frozen)
        appsrc.connect("need-data", lambda _src, _length: feeder.playing.set())
        media.connect("unprepared", lambda _media: feeder.stop.set())
        feeder.start()
        log(f"EVENT session mount={mount}")

    factory.connect("media-configure", on_media_configure)
    return factory


def setup_auth(GstRtsp, GstRtspServer, server, factories, user_pass, method):
    user, password = user_pass.split(":", 1)
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, user)
    # PyGObject sees RTSPAuthMethod as an enum, not flags: only one method can be offered.
    if method == "digest":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(user, password, token)
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    for factory in factories:
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role(user)
        perms.add_permission_for_role(user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)


def parse_mount(text):
    mount, sep, path = text.partition("=")
    if not sep or not mount.startswith("/") or not path:
        raise argparse.ArgumentTypeError(f"expected /mount=FILE.mp4, got {text!r}")
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return mount, os.path.abspath(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that GStreamer is usable")
    ap.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1; 0 picks a free one")
    ap.add_argument("--mount", type=parse_mount, action="append", default=[], metavar="/PATH=FILE.mp4")
    ap.add_argument("--auth", metavar="USER:PASS", help="require RTSP authentication")
    ap.add_argument("--auth-method", choices=["digest", "basic"], default="digest")
    ap.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin is closed")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    if not args.mount:
        ap.error("at least one --mount is required")
    if args.auth is not None and ":" not in args.auth:
        ap.error("--auth must be USER:PASS")

    GLib, Gst, GstRtsp, GstRtspServer = import_gst()
    Gst.init(None)
    frozen = threading.Event()  # shared by every feeder: a freeze stops all mounts at once

    server = GstRtspServer.RTSPServer()
    server.set_address(ADDRESS)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = []
    for mount, path in args.mount:
        clip = Clip(Gst, path)
        log(f"{mount}: {path}: {clip}")
        factory = make_factory(GstRtspServer, Gst, mount, clip, frozen)
        mounts.add_factory(mount, factory)
        factories.append(factory)
    if args.auth:
        setup_auth(GstRtsp, GstRtspServer, server, factories, args.auth, args.auth_method)

    server.connect("client-connected", lambda _server, _client: log("EVENT client-connected"))
    if server.attach(None) == 0:
        log(f"cannot listen on {ADDRESS}:{args.port}")
        return 2
    loop = GLib.MainLoop()

    def drop_clients():
        dropped = []

        def remove(_server, client):
            dropped.append(client)
            return GstRtspServer.RTSPFilterResult.REMOVE  # closes the client's connection

        server.client_filter(remove)
        log(f"EVENT drop clients={len(dropped)}")
        return GLib.SOURCE_CONTINUE

    def toggle_freeze():
        if frozen.is_set():
            frozen.clear()
        else:
            frozen.set()
        log(f"EVENT freeze {'on' if frozen.is_set() else 'off'}")
        return GLib.SOURCE_CONTINUE

    def quit_(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    def parent_alive():
        if os.getppid() != args.parent_pid:  # reparented: our parent died
            log("parent process gone")
            return quit_()
        return GLib.SOURCE_CONTINUE

    def stdin_ready(_channel, _condition):
        # The controller never writes: readable means end-of-file (or hang-up).
        if not os.read(0, 4096):
            log("stdin closed")
            return quit_()
        return GLib.SOURCE_CONTINUE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR1, drop_clients)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR2, toggle_freeze)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_)
    if args.parent_pid:
        GLib.timeout_add(250, parent_alive)
    if args.exit_on_stdin_eof:
        GLib.io_add_watch(
            GLib.IOChannel.unix_new(0), GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP, stdin_ready
        )

    port = server.get_bound_port()
    log(f"READY port={port} pid={os.getpid()}")
    base = f"rtsp://{ADDRESS}:{port}"
    log("serving " + "  ".join(base + mount for mount, _ in args.mount))
    loop.run()
    log("EVENT stop")
    # Close the connections ourselves so clients see a clean TCP close, then leave without
    # tearing down the feeder threads one by one (they are daemons).
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
