"""The device signing key that signs the manifest (docs/tamper-evidence.md §2), and the file names.

Split from camrec/store/manifest.py, which re-exports these names.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from camrec.errors import StorageError
from camrec.store.layout import fsync_dir

log = logging.getLogger("camrec.store.manifest")  # (messages kept under the manifest's logger)

MANIFEST_NAME = "manifest.jsonl"
KEY_NAME = "device-signing.key"
PUB_NAME = "device-signing.pub"


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a device key: the first 16 hex digits of SHA-256(raw key)."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Creates `path` with `data` atomically and never over an existing file; False if it exists.

    Written under a temporary name and hard-linked into place, so a crash can leave a stray
    temporary file but never an empty or half-written key under the real name.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        tmp.unlink()  # e.g. a full disk: leave no empty key file behind
        raise
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return True


def load_or_create_signing_key(root: Path) -> Ed25519PrivateKey:
    """The device signing key, generated on first use (0600) with its public half beside it.

    Refuses to make a new key when a manifest already exists without one: silently starting a
    new key would make every earlier entry look forged (`unknown key`) to `camrec verify`.
    """
    key_path, pub_path = root / KEY_NAME, root / PUB_NAME
    try:
        if not key_path.exists():
            if (root / MANIFEST_NAME).exists() and (root / MANIFEST_NAME).stat().st_size:
                raise StorageError(
                    f"{key_path} is missing but {root / MANIFEST_NAME} exists",
                    hint=f"restore the device key from a backup, or move {MANIFEST_NAME} away to start a new chain")
            new = Ed25519PrivateKey.generate()
            pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            if _write_new(key_path, pem, 0o600):
                log.info("created the device signing key %s (key id %s)", key_path, key_id(new.public_key()))
        data = key_path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot create or read the device signing key {key_path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise StorageError(f"{key_path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StorageError(f"{key_path} is not an Ed25519 private key")
    pem_pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # Written only when absent: a start on a full disk must not need space for it.
        if (pub_path.exists() or not _write_new(pub_path, pem_pub, 0o644)) and pub_path.read_bytes() != pem_pub:
            raise StorageError(f"{pub_path} does not belong to {key_path}",
                               hint="someone replaced one of them; check both against your saved key id")
    except OSError as exc:
        raise StorageError(f"cannot write {pub_path}: {exc.strerror or exc}") from None
    return key
