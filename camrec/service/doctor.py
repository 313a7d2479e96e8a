"""`camrec doctor`: checks what the systemd unit cannot guarantee by itself.

The unit declares a sandbox, but some of it can silently not happen (systemd skips IP filtering on
kernels without cgroup BPF), and some things are outside its reach (a storage disk that isn't
mounted, a private key left on the device, a camera that doesn't answer). Each check returns a
:class:`CheckResult` (pass / warn / fail / skip, one line of explanation, optional details);
nothing here raises for a failed check, and nothing prints.

The outbound probe. systemd's IPAddressDeny= is a cgroup BPF program that *drops* denied packets.
For TCP that is invisible to connect(): the kernel ignores the error from sending the SYN, so a
blocked connect() just hangs until it times out, exactly like a black-holed route (measured on
Linux 6.18 with the same kind of program systemd installs). A UDP send(), by contrast, reports the
drop at once as EPERM. So the probe is one empty UDP datagram to an address reserved for
documentation (192.0.2.1, RFC 5737; 2001:db8::1, RFC 3849) that no LAN and no real host uses.
What each outcome means:

- EPERM / EACCES at once: refused inside this host (the unit's IP filter, or a host firewall's
  OUTPUT rule) → blocked.
- sent: the datagram left the process → nothing stops the service from phoning out.
- ENETUNREACH / EHOSTUNREACH / EADDRNOTAVAIL: no route right now. That is not a filter: once a
  default route appears (DHCP), traffic would flow → inconclusive.
- EAFNOSUPPORT at socket(): that address family is unavailable (e.g. IPv6 disabled).
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import os
import pwd
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from camrec.config.files import permission_problems
from camrec.errors import CamrecError, SourceError
from camrec.redact import redact
from camrec.service.sdnotify import watchdog_interval
from camrec.store.layout import fsync_dir

__all__ = [
    "CHECK_NAMES", "DEFAULT_PROBE_TARGETS", "LOCAL_NETWORKS", "CheckResult", "ChecksFailed", "Options", "Probe",
    "check_cameras", "check_clock", "check_keys", "check_outbound", "check_service", "check_software",
    "check_storage", "in_camrec_unit", "placement_note", "probe_outbound", "run_checks", "service_unit",
]

Status = Literal["pass", "warn", "fail", "skip"]
_RANK = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}

# Documentation addresses: never assigned to a host, outside every range the unit allows.
DEFAULT_PROBE_TARGETS: tuple[tuple[str, int], ...] = (("192.0.2.1", 9), ("2001:db8::1", 9))

# What camrec.service allows by default (IPAddressAllow=), spelled out as systemd expands it.
LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",                          # localhost
    "169.254.0.0/16", "fe80::/64",                     # link-local
    "224.0.0.0/4", "ff00::/8",                         # multicast
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "fc00::/7",                                        # IPv6 unique local
))

CHECK_NAMES = ("service", "clock", "software", "outbound", "storage", "permissions", "keys", "cameras")

# Below this the clock is certainly wrong (a Pi has no RTC; before NTP it may think it's 1970).
_EARLIEST_PLAUSIBLE = 1735689600  # 2025-01-01T00:00:00Z
_KEY_SCAN_LIMIT = 1024 * 1024
_SEPARATE_DISK_FILESYSTEMS = {"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk"}
_VOLATILE_FILESYSTEMS = {"tmpfs", "ramfs"}
_DOCTOR_HINT = "run it inside the service's sandbox: sudo systemctl start camrec-doctor"


class ChecksFailed(CamrecError):
    """At least one doctor check failed (or warned, with --strict)."""

    exit_code = 10


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": redact(self.message),
                "details": [redact(d) for d in self.details]}



def check_permissions(config: Any) -> CheckResult:
    """`camrec doctor`'s "permissions" check: fails when permission_problems finds anything."""
    problems = permission_problems(config)
    if problems:
        return CheckResult("permissions", "fail", f"{len(problems)} path(s) writable by other users",
                           (*problems, "chmod go-w each of them (0750 for the storage directory)"))
    return CheckResult("permissions", "pass", "config, recipients and storage are writable only by their owner")

def _worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda s: _RANK[s], default="pass")


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _size(n: float) -> str:
    """Powers of 1000, as storage sizes are written in the config (1GB = 10^9 bytes)."""
    unit = "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def service_unit(cgroup: Path = Path("/proc/self/cgroup")) -> str | None:
    """The systemd service this process runs in, from its cgroup path (``0::/system.slice/x.service``).

    The cgroup, not $INVOCATION_ID: that variable is inherited, e.g. by every shell of a desktop
    terminal that runs as a user service, and says nothing about which sandbox applies.
    """
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name = line.split(":", 2)[-1].rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".service"):
            return name
    return None


def in_camrec_unit(cgroup: Path = Path("/proc/self/cgroup")) -> bool:
    """True inside camrec.service or camrec-doctor.service: the sandbox (and IP filter) is ours."""
    unit = service_unit(cgroup)
    return unit is not None and unit.startswith("camrec")


# --- outbound ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    target: str
    outcome: Literal["blocked", "sent", "no-route", "unavailable", "inconclusive"]
    reason: str  # an errno name, "timeout" or "sent"
    seconds: float


def probe_outbound(host: str, port: int, *, timeout: float = 1.0,
                   socket_factory: Callable[..., socket.socket] = socket.socket) -> Probe:
    """Sends one empty UDP datagram to host:port and reports what stopped it, if anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    started = time.monotonic()

    def done(outcome: Any, reason: str) -> Probe:
        return Probe(target, outcome, reason, time.monotonic() - started)

    try:
        sock = socket_factory(family, socket.SOCK_DGRAM)
    except OSError as exc:
        return done("unavailable", _errno_name(exc))
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))  # UDP: only a route lookup, nothing is sent yet
        sock.send(b"")  # the egress filter judges this datagram
    except TimeoutError:
        return done("inconclusive", "timeout")
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return done("blocked", _errno_name(exc))
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return done("no-route", _errno_name(exc))
        if exc.errno == errno.EAFNOSUPPORT:
            return done("unavailable", _errno_name(exc))
        return done("inconclusive", _errno_name(exc))
    finally:
        sock.close()
    return done("sent", "sent")


def check_outbound(targets: Iterable[tuple[str, int]] = DEFAULT_PROBE_TARGETS, *, sandboxed: bool,
                   socket_factory: Callable[..., socket.socket] = socket.socket) -> CheckResult:
    probes = [probe_outbound(h, p, socket_factory=socket_factory) for h, p in targets]
    details = tuple(f"{p.target}: {p.outcome} ({p.reason}, {p.seconds * 1000:.0f} ms)" for p in probes)
    sent = [p for p in probes if p.outcome == "sent"]
    blocked = [p for p in probes if p.outcome == "blocked"]
    if sent:
        if sandboxed:
            return CheckResult("outbound", "fail", f"NOT blocked: a datagram to {sent[0].target} left the unit; "
                               "IPAddressDeny= is not in force (kernel without cgroup BPF, or the unit was "
                               "changed)", details)
        return CheckResult("outbound", "warn", f"not blocked outside the unit (a datagram to {sent[0].target} left); "
                           f"the service's IP filter only applies inside the unit: {_DOCTOR_HINT}", details)
    if blocked:
        return CheckResult("outbound", "pass", f"blocked: sending to {blocked[0].target} failed at once with "
                           f"{blocked[0].reason} (the IP filter or a host firewall refuses it)", details)
    return CheckResult("outbound", "warn", "inconclusive: no route to the probe addresses right now, which is "
                       "not a filter (a default route would let traffic out)"
                       + ("" if sandboxed else f"; {_DOCTOR_HINT}"), details)


# --- storage -----------------------------------------------------------------------------------


def _mount_of(path: Path, mountinfo: Path) -> tuple[str, str, str] | None:
    """(mount point, fs type, source) of the mount holding ``path``, from /proc/self/mountinfo."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str, str] | None = None
    resolved = str(path)
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        # The longest matching mount point wins; among equals the later line (mounted on top).
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, tail[0], tail[1])
    return best


def _write_probe(directory: Path) -> None:
    """Create, write, fsync and remove a file, then fsync the directory: what a clip write needs."""
    name = directory / f".camrec-doctor-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"camrec doctor write test\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)
    fsync_dir(directory)


def placement_note(path: Path, on_root: bool) -> tuple[Status, str] | None:
    """Storage on the root file system is expected under /var (the default /var/lib/camrec);
    anywhere else (/mnt/…, /media/…, /srv/…) it most likely means the disk isn't mounted."""
    if not on_root:
        return None
    if path == Path("/var") or Path("/var") in path.parents:
        return "pass", "on the root file system (for a Pi, the SD card: a USB disk wears better)"
    return "warn", (f"on the root file system although {path} looks like a separate disk's place: is it mounted? "
                    f"Add RequiresMountsFor={path} to the unit so camrec never records onto the root file system "
                    "instead")


def check_storage(path: Path, min_free: int, *, mountinfo: Path = Path("/proc/self/mountinfo"),
                  root: Path = Path("/")) -> CheckResult:
    try:
        st = path.stat()
    except FileNotFoundError:
        return CheckResult("storage", "fail", f"{path} does not exist",
                           ("StateDirectory=camrec creates /var/lib/camrec; for another path create it owned by "
                            "camrec and add ReadWritePaths= and RequiresMountsFor= to the unit",))
    except OSError as exc:
        return CheckResult("storage", "fail", f"{path}: cannot stat: {exc.strerror}")
    if not stat.S_ISDIR(st.st_mode):
        return CheckResult("storage", "fail", f"{path} is not a directory")

    try:
        _write_probe(path)
    except OSError as exc:
        why = {errno.EROFS: "read-only file system (with ProtectSystem=strict a path outside StateDirectory= "
                            "needs ReadWritePaths=; or the disk is mounted read-only)",
               errno.EACCES: f"permission denied for uid {os.getuid()} (the storage must belong to camrec)",
               errno.EPERM: f"permission denied for uid {os.getuid()}",
               errno.ENOSPC: "no space left on the device"}.get(exc.errno or 0, exc.strerror or str(exc))
        return CheckResult("storage", "fail", f"{path}: cannot write: {why}")

    statuses: list[Status] = ["pass"]
    notes: list[str] = []
    vfs = os.statvfs(path)
    free, total = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
    if free < min_free:
        statuses.append("warn")
        notes.append(f"only {_size(free)} free, less than storage.min_free ({_size(min_free)}): retention will "
                     "delete the oldest clips to make room")

    mount = _mount_of(path.resolve(), mountinfo)
    fstype = mount[1] if mount else "?"
    where = f"{fstype} on {mount[2]} at {mount[0]}" if mount else "file system unknown"
    try:
        # Inside the unit's namespace every writable path is a bind mount, so "is it a mount
        # point" proves nothing there; the device number does.
        on_root = st.st_dev == root.stat().st_dev
    except OSError:
        on_root = False
    placement = placement_note(path.resolve(), on_root)
    if placement is not None:
        statuses.append(placement[0])
        notes.append(placement[1])
    if fstype in _SEPARATE_DISK_FILESYSTEMS:
        statuses.append("warn")
        notes.append(f"{fstype} has no journal and no Unix permissions: a power cut can damage it and any local "
                     "user can read the index; ext4 is recommended")
    if fstype in _VOLATILE_FILESYSTEMS:
        statuses.append("warn")
        notes.append(f"{fstype} is in memory: every clip is lost at reboot")
    if st.st_mode & stat.S_IRWXO:
        statuses.append("warn")
        notes.append(f"mode {stat.S_IMODE(st.st_mode):04o}: other users can list the clips and read the index; "
                     "use 0750")
    message = f"{path}: writable, {_size(free)} free of {_size(total)} (min_free {_size(min_free)}); {where}"
    return CheckResult("storage", _worst(statuses), message, tuple(notes))


# --- private keys ------------------------------------------------------------------------------

# A password written into a camera URL, not taken from ${env:…} or ${cred:…}.
_URL_PASSWORD = re.compile(r"\brtsps?://[^\s/@'\"]*?:(?P<password>[^\s/'\"]*)@", re.IGNORECASE)


def _files_in(directory: Path, skip: Callable[[Path], bool] = lambda p: False) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not skip(p))
    except OSError:
        return []


def _holds_secret_key(path: Path) -> bool | None:
    """True/False if readable, None if not a small regular file we may read (which is fine)."""
    from camrec.crypto.keys import contains_secret_key

    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > _KEY_SCAN_LIMIT:
            return None
        with path.open("rb") as f:
            data = f.read(_KEY_SCAN_LIMIT)
    except OSError:
        return None
    return contains_secret_key(data.decode("utf-8", "replace"))


def check_keys(config: Any, *, environ: Mapping[str, str] | None = None, home: Path | None = None) -> CheckResult:
    """No age identity (AGE-SECRET-KEY-…) may be readable by the service (DESIGN §5, threat 1)."""
    from camrec.crypto.keys import contains_secret_key

    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    config_path: Path | None = config.source_path
    if config_path is not None:
        candidates.append(config_path)
        candidates += _files_in(config_path.parent)
    if config.recipients_file is not None:
        candidates.append(Path(config.recipients_file))
    storage = Path(config.storage.path)
    # Only the storage root's own small files: clip directories hold nothing but age files.
    candidates += _files_in(storage, lambda p: p.name.endswith(".age") or p.name.startswith("index.sqlite3"))
    if home is not None and home.is_dir() and home != Path("/") and home != storage:
        for sub in ("", ".config/age", ".config/sops/age", ".ssh"):
            candidates += _files_in(home / sub)
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates += _files_in(Path(env["CREDENTIALS_DIRECTORY"]))

    seen: set[Path] = set()
    found: list[str] = []
    scanned = 0
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        holds = _holds_secret_key(path)
        scanned += holds is not None
        if holds:
            found.append(str(path))
    found += [f"environment variable {name}" for name, value in env.items() if contains_secret_key(value)]
    if found:
        return CheckResult("keys", "fail", f"an age identity (private key) is readable by this process: "
                           f"{', '.join(found)}",
                           ("move it off this machine: the recorder needs only the owner's public key (age1…); "
                            "the identity belongs on the owner's computer",))

    statuses: list[Status] = ["pass"]
    notes: list[str] = []
    if config_path is not None:
        try:
            text = config_path.read_text(encoding="utf-8", errors="replace")
            mode = config_path.stat().st_mode
        except OSError:
            text, mode = "", 0
        literal = [m for m in _URL_PASSWORD.finditer(text) if m.group("password") and "${" not in m.group("password")]
        if literal and mode & stat.S_IROTH:
            statuses.append("warn")
            notes.append(f"{config_path} is world-readable and holds camera password(s) in clear: chmod 0640 it, "
                         "or use ${env:NAME} / ${cred:NAME}")
        elif literal:
            notes.append("camera passwords are written into the config; ${env:NAME} or ${cred:NAME} keeps them "
                         "out of it")
    message = f"no age identity readable in {scanned} file(s) (config, its directory, storage, home, " \
              "credentials) or the environment"
    return CheckResult("keys", _worst(statuses), message, tuple(notes))


# --- cameras -----------------------------------------------------------------------------------


def _outside_local_networks(url: str) -> list[str]:
    """Addresses of the camera host that the unit's default IPAddressAllow= would block."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return []
    if not host:
        return []
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:  # a name: resolved by the system resolver, as the camera connection itself will
            addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0])
                         for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        except (OSError, ValueError):
            return []
    return sorted(str(a) for a in addresses if not any(a in net for net in LOCAL_NETWORKS if net.version == a.version))


def probe_camera(cam: Any, url: str, make_source: Callable[..., Any] | None = None) -> Any:
    """Connects to one camera stream and reads one packet; returns its StreamInfo or raises
    SourceError (redacted). Shared by `camrec check` and the doctor's camera check."""
    if make_source is None:
        from camrec.sources import make_source as default

        make_source = default
    opener: Callable[..., Any] = make_source
    src = opener(url, transport=cam.rtsp_transport, open_timeout=cam.open_timeout,
                      read_timeout=cam.read_timeout)
    try:
        info = src.open()
        if src.read() is None:
            raise SourceError(f"{redact(url)}: the stream ended at once")
        return info
    finally:
        src.close()


def _probe_camera(name: str, cam: Any, role: str, url: str, make_source: Callable[..., Any] | None) -> CheckResult:
    label = f"camera {name}" + (" (detect)" if role == "detect_source" else "")
    try:
        info = probe_camera(cam, url, make_source)
    except SourceError as exc:
        return CheckResult(label, "fail", f"does not answer: {exc.message}", (exc.hint,) if exc.hint else ())
    except Exception as exc:  # a surprise from FFmpeg must not hide the other cameras' results
        return CheckResult(label, "fail", f"does not answer: {type(exc).__name__}: {exc}")
    outside = _outside_local_networks(url)
    if outside:
        return CheckResult(label, "warn", f"answers ({info.describe()}) but {', '.join(outside)} is outside the "
                           "local networks the unit allows", ("add it to IPAddressAllow= in a drop-in",))
    return CheckResult(label, "pass", f"answers: {info.describe()}")


def check_cameras(config: Any, *, make_source: Callable[..., Any] | None = None) -> list[CheckResult]:
    """Connects to every enabled camera stream once (like `camrec check`), all at the same time."""
    jobs: list[tuple[str, Any, str, str]] = []
    results: list[CheckResult] = []
    for name, cam in config.cameras.items():
        if not cam.enabled:
            results.append(CheckResult(f"camera {name}", "skip", "disabled in the config"))
            continue
        jobs += [(name, cam, role, url) for role, url in (("source", cam.source), ("detect_source", cam.detect_source))
                 if url]
    if jobs:
        with ThreadPoolExecutor(max_workers=min(8, len(jobs)), thread_name_prefix="doctor") as pool:
            results += list(pool.map(lambda job: _probe_camera(job[0], job[1], job[2], job[3], make_source), jobs))
    return results


# --- the process and its surroundings ------------------------------------------------------------


def _proc_status(path: Path) -> dict[str, str]:
    try:
        return dict(line.split(":\t", 1) for line in path.read_text().splitlines() if ":\t" in line)
    except OSError:
        return {}


def check_service(config: Any, *, sandboxed: bool, environ: Mapping[str, str] | None = None,
                  proc_status: Path = Path("/proc/self/status"), uid: int | None = None) -> CheckResult:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    statuses: list[Status] = []
    notes: list[str] = []
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    if uid == 0:
        statuses.append("warn")
        notes.append("running as root: the service runs as camrec, and root can read every file, so these "
                     f"results are not the service's; {_DOCTOR_HINT}")
    if any(c.enabled and c.source.startswith(("/dev/v", "picamera:")) for c in config.cameras.values()):
        try:
            video = grp.getgrnam("video").gr_gid
        except KeyError:
            video = -1
        if uid != 0 and video not in (os.getgid(), *os.getgroups()):
            statuses.append("warn")
            notes.append(f"{user} is not in the video group: /dev/video* and Pi cameras will be refused")

    if sandboxed:
        fields = _proc_status(proc_status)
        missing = []
        if fields.get("NoNewPrivs", "").strip() != "1":
            missing.append("NoNewPrivileges")
        if fields.get("Seccomp", "").strip() != "2":
            missing.append("a seccomp filter")
        if int(fields.get("CapEff", "0").strip() or "0", 16) != 0:
            missing.append("an empty capability set")
        if missing:
            statuses.append("warn")
            notes.append("the unit's sandbox is incomplete: no " + ", no ".join(missing))
        watchdog = watchdog_interval(env)
        notes.append("systemd: " + (f"watchdog {watchdog:g}s" if watchdog else "no watchdog (fine for "
                                    "camrec-doctor)") + (", notify socket set" if env.get("NOTIFY_SOCKET") else ""))
        status = _worst(statuses or ["pass"])
        return CheckResult("service", status, f"running as {user} in {service_unit() or 'a camrec unit'}"
                           + ("" if missing else " in the sandbox (no new privileges, seccomp, no capabilities)"),
                           tuple(notes))
    if statuses:
        return CheckResult("service", _worst(statuses), f"running as {user}, outside the camrec unit", tuple(notes))
    return CheckResult("service", "skip", f"running as {user}, outside the camrec unit: its sandbox can't be checked "
                       f"from here; {_DOCTOR_HINT}", tuple(notes))


def check_clock(now: float | None = None) -> CheckResult:
    now = time.time() if now is None else now
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if now < _EARLIEST_PLAUSIBLE:
        return CheckResult("clock", "warn", f"the system clock says {shown}, which cannot be right: clip names and "
                           "retention use it", ("a Raspberry Pi has no battery clock; enable NTP "
                                                "(systemd-timesyncd) with a time server on the LAN, or add an RTC",))
    return CheckResult("clock", "pass", f"system clock {shown}")


def check_software() -> CheckResult:
    try:
        import av
        import cv2
        import numpy
    except ImportError as exc:
        return CheckResult("software", "fail", f"cannot import a dependency: {exc}")
    ffmpeg = getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, av.library_versions.get("libavformat", ())))
    message = (f"Python {sys.version.split()[0]}, PyAV {av.__version__} (FFmpeg {ffmpeg}), "
               f"OpenCV {cv2.__version__}, numpy {numpy.__version__}")
    missing = [what for what, ok in (("H.264 decoder", "h264" in av.codecs_available),
                                     ("RTSP demuxer", "rtsp" in av.formats_available),
                                     ("MP4 muxer", "mp4" in av.formats_available)) if not ok]
    if missing:
        return CheckResult("software", "fail", f"{message}: FFmpeg lacks the {', '.join(missing)}")
    return CheckResult("software", "pass", message)


def _home() -> Path | None:
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return None


@dataclass
class Options:
    skip: frozenset[str] = frozenset()
    sandboxed: bool | None = None  # None: detect (running in a camrec*.service cgroup)
    probe_targets: tuple[tuple[str, int], ...] | None = None  # None: DEFAULT_PROBE_TARGETS
    environ: Mapping[str, str] | None = None


def run_checks(config: Any, options: Options | None = None) -> list[CheckResult]:
    """Every check in a fixed order; the config itself was validated by loading it."""
    opts = options or Options()
    sandboxed = in_camrec_unit() if opts.sandboxed is None else opts.sandboxed
    enabled = sum(1 for c in config.cameras.values() if c.enabled)
    results = [CheckResult("config", "pass", f"{config.source_path}: {len(config.cameras)} camera(s), {enabled} "
                           f"enabled, {len(config.recipients)} recipient(s)")]
    steps: list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]] = [
        ("service", lambda: check_service(config, sandboxed=sandboxed, environ=opts.environ)),
        ("clock", check_clock),
        ("software", check_software),
        ("outbound", lambda: check_outbound(opts.probe_targets or DEFAULT_PROBE_TARGETS, sandboxed=sandboxed)),
        ("storage", lambda: check_storage(Path(config.storage.path), config.storage.min_free)),
        ("permissions", lambda: check_permissions(config)),
        ("keys", lambda: check_keys(config, environ=opts.environ, home=_home())),
        ("cameras", lambda: check_cameras(config)),
    ]
    for name, step in steps:
        if name in opts.skip:
            results.append(CheckResult(name, "skip", "skipped (--skip)"))
            continue
        outcome = step()
        results += outcome if isinstance(outcome, list) else [outcome]
    return results
