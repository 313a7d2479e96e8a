"""HTTPS: a self-signed P-256 certificate made on first start, or the owner's own files.

Browsers withhold WebCrypto outside a secure context, and plain HTTP would let anyone on the LAN
rewrite the page that receives the owner's key (DESIGN §8). The self-signed certificate's SHA-256
fingerprint (`camrec web cert`) is what the owner compares with the browser's warning. It is made
once and then kept, whatever changes in the config, so the fingerprint the owner checked stays
valid; delete `cert.pem` and `key.pem` to make a new one.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from camrec.config.models import WebConfig, parse_listen
from camrec.errors import ConfigError, StorageError
from camrec.web.files import PRIVATE_MODE, ensure_private_dir, read_private, write_private

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650  # self-signed and accepted by hand: browsers' 398-day rule is for public CAs
MAX_PEM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    self_signed: bool


def san_names(listen: tuple[str, ...], hostname: str | None = None) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the certificate: the host name, `<host>.local` (mDNS), each
    listen address that names a host, and loopback (for an SSH tunnel or `curl` on the box)."""
    host = (hostname or socket.gethostname()).split(".")[0]
    dns = [host, f"{host}.local", "localhost"]
    ips = ["127.0.0.1", "::1"]
    for address in listen:
        h, _ = parse_listen(address)
        if not h:
            continue
        try:
            ips.append(str(ipaddress.ip_address(h)))
        except ValueError:
            dns.append(h.lower())
    return list(dict.fromkeys(d for d in dns if d)), list(dict.fromkeys(ips))


def make_self_signed(cert_path: Path, key_path: Path, dns: list[str], ips: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"camrec on {dns[0]}")])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # The key first: a certificate without its key would be kept and never work.
    write_private(key_path, key_pem)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def certificate_files(settings: WebConfig, state_dir: Path, *, create: bool = True) -> CertFiles:
    """The certificate and key to serve: the configured ones, else the self-signed pair in the
    state directory, made now if absent (and `create`)."""
    if settings.tls is not None:
        return CertFiles(settings.tls.cert, settings.tls.key, self_signed=False)
    cert_path, key_path = state_dir / CERT_NAME, state_dir / KEY_NAME
    if create and not (cert_path.exists() and key_path.exists()):
        ensure_private_dir(state_dir)
        dns, ips = san_names(settings.listen)
        make_self_signed(cert_path, key_path, dns, ips)
    return CertFiles(cert_path, key_path, self_signed=True)


def load_certificate(path: Path) -> x509.Certificate:
    data = read_private(path, MAX_PEM_BYTES)
    if data is None:
        raise ConfigError(f"the TLS certificate {path} does not exist")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as browsers show it: AB:CD:…"""
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def fingerprint_der(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def server_context(files: CertFiles) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) for the files; ConfigError when they don't load."""
    if files.self_signed:
        try:
            mode = os.stat(files.key, follow_symlinks=False).st_mode & 0o777
        except OSError as exc:
            raise StorageError(f"cannot read the TLS key {files.key}: {exc.strerror or exc}") from None
        if mode & ~PRIVATE_MODE:
            raise StorageError(f"the TLS key {files.key} is readable by others (mode {mode:o})",
                               hint=f"chmod 600 {files.key}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {files.cert} and key {files.key}: {exc}",
                          hint="web.tls needs a PEM certificate and its unencrypted PEM key") from None
    return context
