"""age v1 (age-encryption.org/v1) for camrec: clips are standard age files.

Modules:
  age.py     header format: stanzas, strict parser, header MAC, file-key wrapping rules
  stream.py  STREAM payload: AgeWriter (incremental), AgeReader / decrypt_stream
  keys.py    X25519 keys, recipient/identity parsing, identity files
  hybrid.py  post-quantum ML-KEM-768 + X25519 keys (age1pq1..., age 1.3+)
  scrypt.py  passphrase stanzas
  passphrase.py  where passphrases come from (terminal / --passphrase-file), lazy passphrase identity
  armor.py   ASCII armor (-----BEGIN AGE ENCRYPTED FILE-----)
  bech32.py  key encoding
  source.py  the buffered byte source the parsers read from

All cryptography comes from the `cryptography` package (X25519, HKDF-SHA256, HMAC-SHA256,
ChaCha20-Poly1305, scrypt, HPKE with ML-KEM-768/X25519); this package only composes it.
Pure core: imports the `cryptography` package and the foundation modules only (errors).
"""

from camrec.crypto.age import HeaderMACError, Identity, Recipient, Stanza
from camrec.crypto.armor import ArmorError
from camrec.crypto.keys import (
    AgeIdentity,
    HybridIdentity,
    HybridRecipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    contains_secret_key,
    identity_file_text,
    load_identities,
    load_identity_files,
    parse_identities,
    parse_identity,
    parse_recipient,
    parse_recipients,
    scrypt_identity,
)
from camrec.crypto.passphrase import LazyScryptIdentity, PassphraseSource
from camrec.crypto.stream import (
    AgeReader,
    AgeWriter,
    PayloadTruncatedError,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
)

__all__ = [
    "AgeIdentity",
    "AgeReader",
    "AgeWriter",
    "ArmorError",
    "HeaderMACError",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "LazyScryptIdentity",
    "PassphraseSource",
    "PayloadTruncatedError",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "contains_secret_key",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "identity_file_text",
    "load_identities",
    "load_identity_files",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "parse_recipients",
    "scrypt_identity",
]
