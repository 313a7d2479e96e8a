"""HTTPS by default (issue 11, item 2): the self-signed P-256 certificate made on first start, its
key 0600, its SANs, and the fingerprint `camrec web cert` prints being the one the server presents;
the owner's own certificate and key; the config refusing plain HTTP off loopback, with file:line."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from camrec.config.loading import parse_config
from camrec.crypto.keys import X25519Identity
from camrec.errors import ConfigError
from camrec.web.server import build_server
from camrec.web.tls import fingerprint_der, make_self_signed


def write_config(tmp_path: Path, web: str) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    path = tmp_path / "camrec.yaml"
    path.write_text(f"recipients: [{X25519Identity.generate().recipient()}]\nstorage:\n  path: {storage}\n"
                    f"cameras:\n  front:\n    source: 'synthetic:'\n{web}")
    path.chmod(0o600)
    return path


def camrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=60)


def peer_fingerprint(port: int) -> str:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # self-signed: what the owner checks is the fingerprint
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 ")
    return fingerprint_der(der)


def test_first_start_makes_a_p256_certificate_that_web_cert_fingerprints(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, 'web:\n  listen: ["127.0.0.1:0", "camrec-test.example:0", "[::1]:0"]\n')
    config = parse_config(config_path.read_text(), config_path)
    server = build_server(config.web, config.storage.path, status=None, audit=lambda e: None)
    state = config.storage.path / ".web"
    key, cert_file = state / "key.pem", state / "cert.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = socket.gethostname().split(".")[0]
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    for name in (host, f"{host}.local", "camrec-test.example"):
        assert name in dns
    assert "127.0.0.1" in ips and "::1" in ips
    server.addresses = [("127.0.0.1", 0)]  # [::1] may be missing in a container
    urls = server.start()
    try:
        assert urls[0].startswith("https://127.0.0.1:")
        port = int(urls[0].rsplit(":", 1)[1].strip("/"))
        presented = peer_fingerprint(port)
        printed = camrec("web", "cert", "-c", str(config_path))
        assert printed.returncode == 0, printed.stderr
        assert f"SHA-256 fingerprint: {presented}" in printed.stdout
        der = cert.public_bytes(serialization.Encoding.DER)
        assert presented == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    finally:
        server.stop()
    # The certificate is kept: a second start and `web cert` show the same fingerprint.
    again = camrec("web", "cert", "-c", str(config_path))
    assert f"SHA-256 fingerprint: {presented}" in again.stdout


def test_web_cert_makes_the_certificate_when_absent(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "")
    out = camrec("web", "cert", "-c", str(config_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "storage" / ".web" / "key.pem").exists()
    assert "(self-signed)" in out.stdout and "SHA-256 fingerprint: " in out.stdout


def test_the_owners_own_certificate_is_served(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    make_self_signed(own / "c.pem", own / "k.pem", ["recorder.home.arpa"], ["127.0.0.1"])
    config_path = write_config(tmp_path,
                               f"web:\n  listen: ['127.0.0.1:0']\n  tls: {{cert: {own}/c.pem, key: own/k.pem}}\n")
    config = parse_config(config_path.read_text(), config_path)
    assert config.web.tls is not None and config.web.tls.key == own / "k.pem"  # relative to the config
    server = build_server(config.web, config.storage.path, status=None, audit=lambda e: None)
    urls = server.start()
    try:
        presented = peer_fingerprint(int(urls[0].rsplit(":", 1)[1].strip("/")))
    finally:
        server.stop()
    printed = camrec("web", "cert", "-c", str(config_path))
    assert f"SHA-256 fingerprint: {presented}" in printed.stdout
    assert not (tmp_path / "storage" / ".web" / "cert.pem").exists()  # no self-signed one made


def test_an_unusable_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    config_path = write_config(tmp_path, "web:\n  tls: {cert: c.pem, key: k.pem}\n")
    config = parse_config(config_path.read_text(), config_path)
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        build_server(config.web, config.storage.path, status=None, audit=lambda e: None)


def test_plain_http_off_loopback_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "web:\n  listen: ['0.0.0.0:8080']\n  plain_http: true\n")
    out = camrec("check", "-c", str(config_path))
    assert out.returncode == 3
    assert f"{config_path}:9: web.plain_http: plain_http is allowed only on loopback addresses, not on '0.0.0.0:8080'" \
        in out.stderr
    for web, message in [("web:\n  listen: ['1.2.3.4']\n", ":8: web.listen[0]: listen address '1.2.3.4' has no port"),
                         ("web:\n  tls: yes\n", ":8: web.tls: expected auto or {cert: PATH, key: PATH}"),
                         ("web:\n  session_idle: 40d\n", ":8: web.session_idle: must be between 1m and 30d"),
                         ("web:\n  lissen: [':1']\n", ":8: web.lissen: unknown key")]:
        with pytest.raises(ConfigError) as exc:
            parse_config(write_config(tmp_path, web).read_text(), tmp_path / "c.yaml")
        assert message in exc.value.message
    ok = parse_config(write_config(tmp_path, "web:\n  listen: ['127.0.0.1:8080', '[::1]:8080']\n  plain_http: true\n")
                      .read_text(), tmp_path / "c.yaml")
    assert ok.web.plain_http
