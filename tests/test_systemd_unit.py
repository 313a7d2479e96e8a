"""The systemd units: hardening score, syntax, the settings the daemon relies on, and that our
dependencies run under MemoryDenyWriteExecute=yes.

`systemd-analyze` checks are skipped (with the reason) where it is not installed. Nothing here
needs a running systemd.
"""

from __future__ import annotations

import ipaddress
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from camrec.errors import ConfigError, IdentityError, UsageError
from camrec.service.doctor import DEFAULT_PROBE_TARGETS

ROOT = Path(__file__).resolve().parent.parent
UNITS = {name: ROOT / "systemd" / name for name in ("camrec.service", "camrec-doctor.service")}
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections → (key, value) in file order; repeated keys kept, as systemd reads them."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a key=value line: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in parse_unit(path)[section] if k == key]


def one(path: Path, key: str, section: str = "Service") -> str:
    found = values(path, key, section)
    assert len(found) == 1, f"{path.name}: expected one {key}=, found {found}"
    return found[0]


# --- systemd-analyze -------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("name", sorted(UNITS))
def test_security_exposure_is_low(name: str) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(UNITS[name])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no overall score in:\n{result.stdout[-2000:]}\n{result.stderr}"
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@needs_analyze
@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_verifies(name: str, tmp_path: Path) -> None:
    # `verify` insists that ExecStart's binary exists; /opt/camrec/venv only exists on an installed
    # machine, so check a copy pointing at this Python. Everything else is verified as written.
    assert SYSTEMD_ANALYZE is not None
    copy = tmp_path / name
    text = UNITS[name].read_text()
    text, n = re.subn(r"^ExecStart=/opt/camrec/venv/bin/camrec ", f"ExecStart={sys.executable} -m camrec ",
                      text, flags=re.MULTILINE)
    assert n == 1
    copy.write_text(text)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60)
    # Other units on this machine may draw warnings of their own; only ours matter.
    ours = [line for line in result.stderr.splitlines() if name in line or str(copy) in line]
    assert result.returncode == 0 and not ours, result.stderr


# --- what the daemon and the doctor rely on --------------------------------------------------


def test_recorder_unit_settings() -> None:
    unit = UNITS["camrec.service"]
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert one(unit, "Restart") == "on-failure"
    watchdog = one(unit, "WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and 10 <= int(watchdog[:-1]) <= 120
    assert one(unit, "User") == "camrec" and one(unit, "Group") == "camrec"
    assert one(unit, "SupplementaryGroups") == "video"
    assert one(unit, "DeviceAllow") == "char-video4linux rw"
    assert one(unit, "ExecStart").endswith(" run -c /etc/camrec/config.yaml")
    assert one(unit, "StateDirectory") == "camrec"
    assert one(unit, "ConfigurationDirectory") == "camrec"
    assert one(unit, "WantedBy", section="Install") == "multi-user.target"


def test_no_restart_for_errors_a_restart_cannot_fix() -> None:
    codes = {int(c) for c in one(UNITS["camrec.service"], "RestartPreventExitStatus").split()}
    assert codes == {UsageError.exit_code, ConfigError.exit_code, IdentityError.exit_code}


def _allowed_networks(unit: Path) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    # systemd's symbolic names, as documented in systemd.resource-control(5).
    names = {
        "localhost": ["127.0.0.0/8", "::1/128"],
        "link-local": ["169.254.0.0/16", "fe80::/64"],
        "multicast": ["224.0.0.0/4", "ff00::/8"],
    }
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for value in values(unit, "IPAddressAllow"):
        for item in value.split():
            nets.extend(ipaddress.ip_network(n) for n in names.get(item, [item]))
    return nets


def test_ip_filter_denies_everything_but_local_networks() -> None:
    unit = UNITS["camrec.service"]
    assert values(unit, "IPAddressDeny") == ["any"]
    nets = _allowed_networks(unit)
    assert all(net.is_private or net.is_multicast or net.is_link_local or net.is_loopback for net in nets), nets
    # The doctor's probe addresses must be outside the allow list, or the probe proves nothing.
    for host, _port in DEFAULT_PROBE_TARGETS:
        address = ipaddress.ip_address(host)
        assert not any(address in net for net in nets if net.version == address.version), host
    # ...and a camera on a typical home LAN must be inside it.
    assert any(ipaddress.ip_address("192.168.1.20") in net for net in nets if net.version == 4)


# Settings that legitimately differ between the long-running recorder and the one-shot doctor.
# RuntimeDirectory= belongs to the recorder alone: stopping the doctor would remove it.
_ROLE_KEYS = {"Type", "NotifyAccess", "ExecStart", "WatchdogSec", "Restart", "RestartSec",
              "RestartPreventExitStatus", "TimeoutStartSec", "TimeoutStopSec", "RuntimeDirectory",
              "RuntimeDirectoryMode"}


def test_doctor_runs_in_the_same_sandbox() -> None:
    recorder = [kv for kv in parse_unit(UNITS["camrec.service"])["Service"] if kv[0] not in _ROLE_KEYS]
    doctor = [kv for kv in parse_unit(UNITS["camrec-doctor.service"])["Service"] if kv[0] not in _ROLE_KEYS]
    assert doctor == recorder
    assert one(UNITS["camrec-doctor.service"], "Type") == "oneshot"
    assert one(UNITS["camrec-doctor.service"], "ExecStart").endswith(" doctor -c /etc/camrec/config.yaml")
    assert "Install" not in parse_unit(UNITS["camrec-doctor.service"])  # started by hand, never enabled
    assert values(UNITS["camrec-doctor.service"], "RuntimeDirectory") == []
    assert one(UNITS["camrec.service"], "RuntimeDirectory") == "camrec"


def test_sysusers_and_tmpfiles_match_the_unit() -> None:
    sysusers = (ROOT / "systemd" / "camrec.sysusers").read_text()
    assert re.search(r"^u camrec - .* /var/lib/camrec\b", sysusers, re.MULTILINE)
    assert re.search(r"^m camrec video$", sysusers, re.MULTILINE)
    tmpfiles = (ROOT / "systemd" / "camrec.tmpfiles").read_text()
    assert re.search(r"^d /etc/camrec 0750 root camrec -$", tmpfiles, re.MULTILINE)


# --- MemoryDenyWriteExecute=yes ----------------------------------------------------------------

# systemd 252 (Debian/Raspberry Pi OS bookworm) implements MemoryDenyWriteExecute= as a seccomp
# filter (src/shared/seccomp-util.c): EPERM for mmap() with PROT_WRITE|PROT_EXEC, for mprotect()
# and pkey_mprotect() adding PROT_EXEC at all, and for shmat() with SHM_EXEC. The script below
# installs the same rules on this process (no root needed with no_new_privs), proves they bite,
# then imports every camrec module and does the work the recorder does: H.264 encode/decode in
# PyAV's FFmpeg, fragmented-MP4 muxing, OpenCV and numpy image work, JPEG, ChaCha20-Poly1305,
# SQLite, threads. Newer systemd uses prctl(PR_SET_MDWE) where the kernel has it: same effect for
# W+X mappings, slightly laxer for mprotect(), so passing here covers both.
_SYSCALLS = {  # machine: (AUDIT_ARCH, mmap, mprotect, pkey_mprotect, shmat)
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}

_MDWE_SCRIPT = textwrap.dedent(
    """
    import ctypes, errno, mmap, sys
    arch, nr_mmap, nr_mprotect, nr_pkey_mprotect, nr_shmat = ARGS
    LD_W_ABS, JEQ_K, AND_K, RET_K = 0x20, 0x15, 0x54, 0x06
    ALLOW, EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
    ARG2 = 16 + 2 * 8  # seccomp_data.args[2], low 32 bits (little-endian)

    def deny_if_masked(mask):  # A = arg2 & mask; EPERM if A == mask
        return [(LD_W_ABS, 0, 0, ARG2), (AND_K, 0, 0, mask), (JEQ_K, 0, 1, mask),
                (RET_K, 0, 0, EPERM), (RET_K, 0, 0, ALLOW)]

    prog = [(LD_W_ABS, 0, 0, 4), (JEQ_K, 1, 0, arch), (RET_K, 0, 0, ALLOW), (LD_W_ABS, 0, 0, 0),
            (JEQ_K, 4, 0, nr_mmap), (JEQ_K, 8, 0, nr_mprotect), (JEQ_K, 7, 0, nr_pkey_mprotect),
            (JEQ_K, 11, 0, nr_shmat), (RET_K, 0, 0, ALLOW)]
    prog += deny_if_masked(PROT_WRITE | PROT_EXEC) + deny_if_masked(PROT_EXEC) + deny_if_masked(SHM_EXEC)

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    assert libc.prctl(38, 1, None, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS"
    fprog = Prog(len(prog), insns)
    if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:
        print("SKIP seccomp unavailable:", errno.errorcode.get(ctypes.get_errno()))
        sys.exit(0)

    # The rule bites: W+X memory is refused.
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        raise SystemExit("W+X mmap was allowed: the filter is not in force")

    import importlib, io, pkgutil, sqlite3, threading
    import camrec
    for info in pkgutil.walk_packages(camrec.__path__, "camrec."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)  # a new native dependency that needs W+X fails here
        except ImportError as exc:
            # A shared object refused by the rule fails dlopen() with "Operation not permitted" or
            # "cannot enable executable stack"; any other ImportError is some other test's business.
            if any(s in str(exc) for s in ("not permitted", "executable stack", "shared object")):
                raise
            print("note: not imported:", info.name, exc, file=sys.stderr)

    import av, cv2, numpy as np
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"})
    stream = out.add_stream("libx264", rate=15)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    for i in range(30):
        img = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(img, (i * 8, 60), (i * 8 + 40, 120), (255, 255, 255), -1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()

    def decode():
        grey = []
        with av.open(io.BytesIO(buf.getvalue())) as src:
            for frame in src.decode(video=0):
                grey.append(frame.reformat(width=160, height=120, format="gray").to_ndarray())
        return grey

    results = []
    threads = [threading.Thread(target=lambda: results.append(decode())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frames = results[0]
    assert len(frames) == 30 and len(results) == 2, len(frames)
    diff = cv2.absdiff(frames[10], frames[20])
    _, mask = cv2.threshold(cv2.GaussianBlur(diff, (5, 5), 0), 25, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    assert contours and float(np.count_nonzero(mask)) > 0
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(frames[15], (640, 480)))
    assert ok and len(jpeg) > 100
    key = ChaCha20Poly1305.generate_key()
    sealed = ChaCha20Poly1305(key).encrypt(b"\\0" * 12, buf.getvalue(), None)
    assert ChaCha20Poly1305(key).decrypt(b"\\0" * 12, sealed, None) == buf.getvalue()
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    print("OK", len(buf.getvalue()), "bytes of H.264 in fMP4")
    """
)


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in _SYSCALLS,
                    reason="seccomp rule written for Linux x86_64/aarch64 only")
def test_dependencies_run_without_writable_executable_memory() -> None:
    args = _SYSCALLS[platform.machine()]
    script = _MDWE_SCRIPT.replace("ARGS", repr(args))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    if result.stdout.startswith("SKIP"):
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK"), result.stdout + result.stderr

