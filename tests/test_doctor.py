"""`camrec doctor`: each check with stubs and temporary directories, cameras against a real RTSP
server on 127.0.0.1, and the command line.

No test sends anything anywhere but loopback: the outbound probe is stubbed or pointed at
127.0.0.1, and an autouse guard fails any test whose Python sockets try another address.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from camrec.cli import main
from camrec.config import load_config
from camrec.crypto.keys import X25519Identity, identity_file_text
from camrec.service import doctor
from camrec.service.doctor import CheckResult, Options
from tests.support.camera import RtspCamera, free_port

# --- the loopback-only guard -----------------------------------------------------------------

_real_connect = socket.socket.connect
_real_sendto = socket.socket.sendto
# Taken before the guard below swaps the attribute for a loopback address.
SHIPPED_PROBE_TARGETS = doctor.DEFAULT_PROBE_TARGETS


def _loopback_only(address: Any) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        host = address[0]
        if host == "localhost":
            return
        assert ipaddress.ip_address(host.split("%")[0]).is_loopback, f"a test tried to reach {host}"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: socket.socket, address: Any) -> None:
        _loopback_only(address)
        _real_connect(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        _loopback_only(args[-1])
        return _real_sendto(self, data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    # Anything that reaches the default probe without meaning to stays on this machine.
    monkeypatch.setattr(doctor, "DEFAULT_PROBE_TARGETS", (("127.0.0.1", 9),))


def test_guard_refuses_other_addresses() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(AssertionError):
        s.connect(("192.0.2.1", 9))


# --- the outbound probe ------------------------------------------------------------------------


class FakeSocket:
    """Stands in for socket.socket: raises the given errors at socket()/connect()/send()."""

    def __init__(self, *, at_socket: BaseException | None = None, at_connect: BaseException | None = None,
                 at_send: BaseException | None = None) -> None:
        self.errors = {"socket": at_socket, "connect": at_connect, "send": at_send}
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, family: int, kind: int) -> FakeSocket:
        self.calls.append(("socket", (family, kind)))
        self._raise("socket")
        return self

    def _raise(self, step: str) -> None:
        if self.errors[step] is not None:
            raise self.errors[step]  # type: ignore[misc]

    def settimeout(self, timeout: float) -> None:
        self.calls.append(("settimeout", timeout))

    def connect(self, address: Any) -> None:
        self.calls.append(("connect", address))
        self._raise("connect")

    def send(self, data: bytes) -> int:
        self.calls.append(("send", data))
        self._raise("send")
        return len(data)

    def close(self) -> None:
        self.calls.append(("close", None))


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize(
    ("fake", "outcome", "reason"),
    [
        (FakeSocket(at_send=oserror(errno.EPERM)), "blocked", "EPERM"),  # systemd's cgroup filter
        (FakeSocket(at_send=oserror(errno.EACCES)), "blocked", "EACCES"),
        (FakeSocket(at_connect=oserror(errno.EPERM)), "blocked", "EPERM"),  # a connect hook / LSM
        (FakeSocket(), "sent", "sent"),
        (FakeSocket(at_send=TimeoutError()), "inconclusive", "timeout"),
        (FakeSocket(at_connect=oserror(errno.ENETUNREACH)), "no-route", "ENETUNREACH"),
        (FakeSocket(at_send=oserror(errno.EHOSTUNREACH)), "no-route", "EHOSTUNREACH"),
        (FakeSocket(at_connect=oserror(errno.EADDRNOTAVAIL)), "no-route", "EADDRNOTAVAIL"),
        (FakeSocket(at_socket=oserror(errno.EAFNOSUPPORT)), "unavailable", "EAFNOSUPPORT"),
        (FakeSocket(at_send=oserror(errno.ECONNREFUSED)), "inconclusive", "ECONNREFUSED"),
    ],
)
def test_probe_outcomes(fake: FakeSocket, outcome: str, reason: str) -> None:
    probe = doctor.probe_outbound("192.0.2.1", 9, socket_factory=fake)
    assert (probe.outcome, probe.reason, probe.target) == (outcome, reason, "192.0.2.1:9")
    if fake.errors["socket"] is None:
        assert fake.calls[-1] == ("close", None)
        assert ("connect", ("192.0.2.1", 9)) in fake.calls


def test_probe_is_udp_and_empty() -> None:
    fake = FakeSocket()
    probe = doctor.probe_outbound("2001:db8::1", 9, socket_factory=fake)
    assert fake.calls[0] == ("socket", (socket.AF_INET6, socket.SOCK_DGRAM))
    assert ("send", b"") in fake.calls
    assert probe.target == "[2001:db8::1]:9"


def _factory(by_family: dict[int, FakeSocket]) -> Callable[[int, int], FakeSocket]:
    return lambda family, kind: by_family[family](family, kind)


V4, V6 = socket.AF_INET, socket.AF_INET6
EPERM, NOROUTE = oserror(errno.EPERM), oserror(errno.ENETUNREACH)


@pytest.mark.parametrize(
    ("v4", "v6", "sandboxed", "status"),
    [
        (FakeSocket(at_send=EPERM), FakeSocket(at_send=EPERM), True, "pass"),
        (FakeSocket(at_send=EPERM), FakeSocket(at_connect=NOROUTE), True, "pass"),  # no IPv6 here
        (FakeSocket(), FakeSocket(at_send=EPERM), True, "fail"),  # one family leaks
        (FakeSocket(), FakeSocket(), True, "fail"),
        (FakeSocket(), FakeSocket(), False, "warn"),  # a shell: can't speak for the service
        (FakeSocket(at_connect=NOROUTE), FakeSocket(at_connect=NOROUTE), True, "warn"),
        (FakeSocket(at_send=TimeoutError()), FakeSocket(at_connect=NOROUTE), True, "warn"),
        (FakeSocket(at_send=EPERM), FakeSocket(at_send=EPERM), False, "pass"),  # a host firewall
    ],
)
def test_outbound_verdicts(v4: FakeSocket, v6: FakeSocket, sandboxed: bool, status: str) -> None:
    result = doctor.check_outbound((("192.0.2.1", 9), ("2001:db8::1", 9)), sandboxed=sandboxed,
                                   socket_factory=_factory({V4: v4, V6: v6}))
    assert result.status == status, result
    assert len(result.details) == 2


def test_outbound_against_loopback_for_real() -> None:
    # A real datagram on 127.0.0.1: it arrives, so nothing blocked it, which inside the service is a failure.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2.0)
        port = receiver.getsockname()[1]
        result = doctor.check_outbound([("127.0.0.1", port)], sandboxed=True)
        assert result.status == "fail" and "NOT blocked" in result.message
        assert receiver.recvfrom(16)[0] == b""


def test_outbound_closed_loopback_port() -> None:
    port = free_port()  # nobody listens: the datagram still leaves the process
    probe = doctor.probe_outbound("127.0.0.1", port)
    assert probe.outcome == "sent"
    assert doctor.check_outbound([("127.0.0.1", port)], sandboxed=False).status == "warn"


def test_default_targets_are_documentation_addresses() -> None:
    for host, _port in SHIPPED_PROBE_TARGETS:
        address = ipaddress.ip_address(host)
        documentation = ipaddress.ip_network("192.0.2.0/24" if address.version == 4 else "2001:db8::/32")
        assert address in documentation
        assert not any(address in net for net in doctor.LOCAL_NETWORKS if net.version == address.version)


# --- storage ---------------------------------------------------------------------------------


def test_storage_writable(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    storage.mkdir(mode=0o750)
    storage.chmod(0o750)
    result = doctor.check_storage(storage, 1000, root=Path("/proc"))  # /proc: certainly another device
    assert result.status == "pass", result
    assert "writable" in result.message and "free of" in result.message
    assert list(storage.iterdir()) == []  # the write test cleaned up


def test_storage_missing_or_not_a_directory(tmp_path: Path) -> None:
    assert doctor.check_storage(tmp_path / "nope", 0).status == "fail"
    (tmp_path / "file").write_text("x")
    assert doctor.check_storage(tmp_path / "file", 0).status == "fail"


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                              (errno.ENOSPC, "no space")])
def test_storage_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    # Tests may run as root, which ignores permission bits: fail the open() itself.
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise oserror(code)

    monkeypatch.setattr(doctor.os, "open", refuse)
    result = doctor.check_storage(tmp_path, 0)
    assert result.status == "fail" and words in result.message, result


def test_storage_low_space_and_permissions(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    result = doctor.check_storage(tmp_path, 10**18, root=Path("/proc"))
    assert result.status == "warn"
    assert any("min_free" in d for d in result.details)
    assert any("other users" in d for d in result.details)


def test_placement() -> None:
    assert doctor.placement_note(Path("/mnt/usb/camrec"), on_root=False) is None
    status, note = doctor.placement_note(Path("/var/lib/camrec"), on_root=True) or ("", "")
    assert status == "pass" and "SD card" in note
    status, note = doctor.placement_note(Path("/mnt/usb/camrec"), on_root=True) or ("", "")
    assert status == "warn" and "RequiresMountsFor=/mnt/usb/camrec" in note


def test_storage_on_the_root_fs_outside_var(tmp_path: Path) -> None:
    result = doctor.check_storage(tmp_path, 0, root=tmp_path)  # same device as "root"
    assert result.status == "warn" and any("is it mounted" in d for d in result.details)


def _mountinfo(tmp_path: Path, point: str, fstype: str, source: str) -> Path:
    escaped = point.replace(" ", "\\040")
    path = tmp_path / "mountinfo"
    path.write_text(
        "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw\n"
        f"40 22 8:17 / {escaped} rw,relatime shared:20 - {fstype} {source} rw\n"
    )
    return path


@pytest.mark.parametrize(("fstype", "status", "words"), [("ext4", "pass", None), ("vfat", "warn", "no journal"),
                                                         ("exfat", "warn", "no journal"), ("tmpfs", "warn", "reboot")])
def test_storage_filesystem(tmp_path: Path, fstype: str, status: str, words: str | None) -> None:
    storage = tmp_path / "usb disk"
    storage.mkdir(mode=0o750)
    storage.chmod(0o750)
    info = _mountinfo(tmp_path, str(storage.resolve()), fstype, "/dev/sda1")
    result = doctor.check_storage(storage, 0, mountinfo=info, root=Path("/proc"))
    assert result.status == status, result
    assert f"{fstype} on /dev/sda1 at {storage.resolve()}" in result.message
    if words:
        assert any(words in d for d in result.details)


# --- keys ------------------------------------------------------------------------------------


def write_config(directory: Path, cameras: str = "  cam:\n    source: 'synthetic:'\n", *, mode: int = 0o640) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    recipient = X25519Identity.generate().recipient()
    path = directory / "config.yaml"
    path.write_text(f"recipients: [{recipient}]\nstorage:\n  path: {storage}\n  min_free: 0\ncameras:\n{cameras}")
    path.chmod(mode)
    return path


def key_text() -> str:
    return identity_file_text(X25519Identity.generate())


def test_keys_clean(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "etc"))
    (tmp_path / "etc" / "storage" / "index.sqlite3").write_bytes(b"SQLite format 3\0")
    result = doctor.check_keys(config, environ={}, home=None)
    assert result.status == "pass", result


@pytest.mark.parametrize("where", ["config dir", "storage", "home", "home/.config/age", "credentials"])
def test_keys_found(tmp_path: Path, where: str) -> None:
    config = load_config(write_config(tmp_path / "etc"))
    home, creds = tmp_path / "home", tmp_path / "creds"
    target = {"config dir": tmp_path / "etc" / "owner.key", "storage": tmp_path / "etc" / "storage" / "notes.txt",
              "home": home / "key.txt", "home/.config/age": home / ".config" / "age" / "keys.txt",
              "credentials": creds / "owner"}[where]
    target.parent.mkdir(parents=True, exist_ok=True)
    secret = key_text()
    target.write_text(secret)
    creds.mkdir(exist_ok=True)
    result = doctor.check_keys(config, environ={"CREDENTIALS_DIRECTORY": str(creds)}, home=home)
    assert result.status == "fail" and str(target) in result.message
    assert "AGE-SECRET-KEY" not in result.message + "".join(result.details)


def test_keys_ignores_clips(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "etc"))
    # An .age file is ciphertext by construction; scanning clips would cost much and prove nothing.
    (tmp_path / "etc" / "storage" / "x.mp4.age").write_text(key_text())
    assert doctor.check_keys(config, environ={}, home=None).status == "pass"


def test_keys_in_the_environment(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "etc"))
    result = doctor.check_keys(config, environ={"OWNER_KEY": key_text().splitlines()[-1]}, home=None)
    assert result.status == "fail" and "environment variable OWNER_KEY" in result.message


@pytest.mark.parametrize(("source", "mode", "status", "note"), [
    ("rtsp://admin:pa55word@192.168.1.20/s", 0o644, "warn", "world-readable"),
    ("rtsp://admin:pa55word@192.168.1.20/s", 0o640, "pass", "written into the config"),
    ("rtsp://admin:${env:CAM_PW}@192.168.1.20/s", 0o644, "pass", None),
])
def test_keys_literal_camera_passwords(tmp_path: Path, source: str, mode: int, status: str,
                                       note: str | None) -> None:
    path = write_config(tmp_path, f"  cam:\n    source: '{source}'\n", mode=mode)
    config = load_config(path, environ={"CAM_PW": "from-env"})
    result = doctor.check_keys(config, environ={}, home=None)
    assert result.status == status
    assert (note is None and not result.details) or any(note in d for d in result.details if note)
    assert "pa55word" not in result.message + "".join(result.details)


# --- cameras ---------------------------------------------------------------------------------


def test_camera_answers(tmp_path: Path, rtsp_camera: RtspCamera) -> None:
    cameras = (f"  front:\n    source: {rtsp_camera.url('/cam')}\n    detect_source: {rtsp_camera.url('/cam_sub')}\n"
               "  spare:\n    source: 'synthetic:'\n    enabled: false\n")
    config = load_config(write_config(tmp_path, cameras))
    results = {r.name: r for r in doctor.check_cameras(config)}
    assert results["camera front"].status == "pass" and "640x360" in results["camera front"].message
    assert results["camera front (detect)"].status == "pass" and "320x180" in results["camera front (detect)"].message
    assert results["camera spare"].status == "skip"


def test_camera_refused_is_a_failure_with_the_password_hidden(tmp_path: Path) -> None:
    url = f"rtsp://admin:s3cret-pw@127.0.0.1:{free_port()}/cam"
    config = load_config(write_config(tmp_path, f"  front:\n    source: '{url}'\n    open_timeout: 2s\n"))
    (result,) = doctor.check_cameras(config)
    assert result.status == "fail" and result.name == "camera front"
    assert "does not answer" in result.message
    assert "s3cret-pw" not in json.dumps(result.to_json())


def test_camera_errors_do_not_hide_the_others(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "  a:\n    source: 'synthetic:'\n  b:\n    source: 'synthetic:'\n"))

    class Opener:
        def __init__(self) -> None:
            self.n = 0

        def __call__(self, url: str, **kwargs: Any) -> Any:
            self.n += 1
            if self.n == 1:
                class Bad:
                    def open(self) -> Any:
                        raise RuntimeError("ffmpeg surprise")

                    def close(self) -> None:
                        pass

                return Bad()
            from camrec.sources import make_source

            return make_source(url, **kwargs)

    results = doctor.check_cameras(config, make_source=Opener())
    assert sorted(r.status for r in results) == ["fail", "pass"]


def test_camera_address_outside_the_allowed_networks() -> None:
    assert doctor._outside_local_networks("rtsp://8.8.8.8:554/x") == ["8.8.8.8"]
    assert doctor._outside_local_networks("rtsp://100.64.1.2/x") == ["100.64.1.2"]  # CGNAT/Tailscale
    assert doctor._outside_local_networks("rtsp://192.168.1.20/x") == []
    assert doctor._outside_local_networks("rtsp://[fd00::5]/x") == []
    assert doctor._outside_local_networks("rtsp://localhost/x") == []  # /etc/hosts, no DNS traffic
    assert doctor._outside_local_networks("synthetic:") == []


# --- service, clock, software ------------------------------------------------------------------


def _status_file(tmp_path: Path, nnp: str, seccomp: str, capeff: str) -> Path:
    path = tmp_path / "status"
    path.write_text(f"Name:\tpython3\nNoNewPrivs:\t{nnp}\nSeccomp:\t{seccomp}\nCapEff:\t{capeff}\n")
    return path


def test_service_outside_systemd(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert doctor.check_service(config, sandboxed=False, environ={}, uid=1000).status == "skip"
    root = doctor.check_service(config, sandboxed=False, environ={}, uid=0)
    assert root.status == "warn" and "root" in root.details[0]


def test_service_sandboxed(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    good = _status_file(tmp_path, "1", "2", "0000000000000000")
    result = doctor.check_service(config, sandboxed=True, environ={"WATCHDOG_USEC": "30000000"},
                                  proc_status=good, uid=1000)
    assert result.status == "pass" and "watchdog 30s" in result.details[-1]
    bad = _status_file(tmp_path, "0", "0", "000001ffffffffff")
    result = doctor.check_service(config, sandboxed=True, environ={}, proc_status=bad, uid=1000)
    assert result.status == "warn"
    assert "NoNewPrivileges" in result.details[0] and "capability" in result.details[0]


@pytest.mark.parametrize(("content", "unit", "ours"), [
    ("0::/system.slice/camrec-doctor.service\n", "camrec-doctor.service", True),
    ("0::/system.slice/camrec.service\n", "camrec.service", True),
    ("12:pids:/\n1:name=systemd:/system.slice/camrec.service\n0::/system.slice/camrec.service\n", "camrec.service",
     True),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/gnome-terminal-server.service\n",
     "gnome-terminal-server.service", False),  # a desktop terminal: $INVOCATION_ID is set there too
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None, False),  # an ssh login
    ("0::/\n", None, False),
])
def test_which_unit(tmp_path: Path, content: str, unit: str | None, ours: bool) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(content)
    assert doctor.service_unit(cgroup) == unit
    assert doctor.in_camrec_unit(cgroup) is ours
    assert doctor.service_unit(tmp_path / "missing") is None


def test_clock() -> None:
    assert doctor.check_clock(0.0).status == "warn"
    assert doctor.check_clock(1_800_000_000.0).status == "pass"


def test_software() -> None:
    result = doctor.check_software()
    assert result.status == "pass" and "PyAV" in result.message and "FFmpeg" in result.message


def test_run_checks_order_and_skip(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    results = doctor.run_checks(config, Options(skip=frozenset({"cameras", "software"}), sandboxed=False,
                                                probe_targets=(("127.0.0.1", free_port()),), environ={}))
    assert [r.name for r in results] == ["config", "service", "clock", "software", "outbound", "storage",
                                         "permissions", "keys", "cameras"]
    by_name = {r.name: r for r in results}
    assert by_name["cameras"].status == "skip" and by_name["software"].status == "skip"
    assert by_name["outbound"].status == "warn"  # loopback is reachable; outside systemd that's a warning


# --- the command -------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_text_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "in_camrec_unit", lambda: False)
    path = write_config(tmp_path)
    code, out, err = run_cli(capsys, "doctor", "-c", str(path), "--skip", "cameras")
    assert code == 0, out + err
    assert out.splitlines()[0].startswith("ok    config")
    assert "camrec doctor:" in out.splitlines()[-1]

    (tmp_path / "owner.key").write_text(key_text())
    code, out, err = run_cli(capsys, "doctor", "-c", str(path), "--skip", "cameras")
    assert code == doctor.ChecksFailed.exit_code == 10
    assert "FAIL  keys" in out
    assert err.startswith("camrec: error: 1 check(s) failed: keys")


def test_cli_strict_turns_warnings_into_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "in_camrec_unit", lambda: False)
    path = write_config(tmp_path)
    code, out, _ = run_cli(capsys, "doctor", "-c", str(path), "--skip", "cameras", "--strict")
    has_warning = "WARN" in out
    assert code == (10 if has_warning else 0)


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    code, out, _ = run_cli(capsys, "doctor", "-c", str(path), "--json", "--skip", "cameras", "--skip", "outbound")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert {c["name"] for c in doc["checks"]} >= {"config", "storage", "keys", "outbound"}
    assert all(c["status"] in ("pass", "warn", "fail", "skip") for c in doc["checks"])
    assert sum(doc["counts"].values()) == len(doc["checks"])


def test_cli_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "doctor", "-c", str(tmp_path / "missing.yaml"))
    assert code == 3 and err.startswith("camrec: error:")


def test_cli_rejects_unknown_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(capsys, "doctor", "-c", str(write_config(tmp_path)), "--skip", "everything")
    assert code == 2


def test_check_result_json_is_redacted() -> None:
    from camrec.redact import register_secret

    register_secret("doctor-secret-value")
    data = CheckResult("x", "fail", "rtsp://u:doctor-secret-value@h/", ("doctor-secret-value",)).to_json()
    assert "doctor-secret-value" not in json.dumps(data)
