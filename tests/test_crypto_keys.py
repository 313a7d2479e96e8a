"""Keys: bech32, X25519 / post-quantum / passphrase recipients and identities, identity files."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from camrec.crypto import bech32
from camrec.crypto.age import Stanza, b64encode
from camrec.crypto.keys import (
    HybridIdentity,
    HybridRecipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    contains_secret_key,
    identity_file_text,
    load_identities,
    parse_identities,
    parse_identity,
    parse_recipient,
    parse_recipients,
    scrypt_identity,
)
from camrec.crypto.stream import decrypt_bytes, encrypt_bytes
from camrec.errors import FormatError, IdentityError

# The example keys of the age spec (C2SP age.md) and of age's own tests.
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
TESTKIT_PQ_IDENTITY = "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"


# --- bech32 ----------------------------------------------------------------------------------


def test_bech32_bip173_valid_strings() -> None:
    for s in [
        "A12UEL5L",
        "a12uel5l",
        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
        "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    ]:
        hrp, _ = bech32.decode(s)
        assert hrp == s[: s.rfind("1")]


@pytest.mark.parametrize(
    "s",
    [
        "A1G7SGD8",  # checksum from an upper-case hrp computed wrongly
        "10a06t8",  # empty hrp
        "1qzzfhee",  # empty hrp
        "a12UEL5L",  # mixed case
        "pzry9x0s0muk",  # no separator
        "x1b4n0q5v",  # invalid data character
        "li1dgmt3",  # too short checksum
        "A12uEL5L",  # mixed case
    ],
)
def test_bech32_bip173_invalid_strings(s: str) -> None:
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(s)


@given(st.binary(max_size=1300), st.sampled_from(["age", "age1pq", "AGE-SECRET-KEY-", "AGE-SECRET-KEY-PQ-"]))
def test_bech32_round_trip_without_length_limit(data: bytes, hrp: str) -> None:
    s = bech32.encode(hrp, data)
    assert s == (s.upper() if hrp.isupper() else s.lower())
    assert bech32.decode(s) == (hrp, data)


def test_bech32_rejects_non_zero_padding() -> None:
    s = bech32.encode("age", bytes(32))
    # Change the last data character (before the 6-char checksum) and re-checksum: the
    # padding bits become non-zero.
    hrp, data5 = "age", [bech32.CHARSET.index(c) for c in s[4:-6]]
    data5[-1] |= 1
    from camrec.crypto.bech32 import _hrp_expand, _polymod

    mod = _polymod([*_hrp_expand(hrp), *data5, 0, 0, 0, 0, 0, 0]) ^ 1
    check = [(mod >> (5 * (5 - i))) & 31 for i in range(6)]
    bad = hrp + "1" + "".join(bech32.CHARSET[v] for v in data5 + check)
    with pytest.raises(bech32.Bech32Error, match="padding"):
        bech32.decode(bad)


# --- X25519 ----------------------------------------------------------------------------------


def test_spec_example_key_pair() -> None:
    ident = X25519Identity.parse(SPEC_IDENTITY)
    assert str(ident) == SPEC_IDENTITY
    assert str(ident.recipient()) == SPEC_RECIPIENT
    assert X25519Recipient.parse(SPEC_RECIPIENT) == ident.recipient()
    assert SPEC_IDENTITY not in repr(ident) and SPEC_RECIPIENT in repr(ident)


def test_generate_and_round_trip() -> None:
    ident = X25519Identity.generate()
    s = str(ident)
    assert s.startswith("AGE-SECRET-KEY-1") and s == s.upper() and len(s) == 74
    r = str(ident.recipient())
    assert r.startswith("age1") and len(r) == 62
    assert str(X25519Identity.parse(s)) == s
    assert str(parse_recipient(r)) == r


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "age1",
        SPEC_RECIPIENT[:-1] + ("q" if SPEC_RECIPIENT[-1] != "q" else "p"),  # checksum
        SPEC_RECIPIENT.upper(),  # age writes and expects lower case
        "age1" + SPEC_RECIPIENT[4:10].upper() + SPEC_RECIPIENT[10:],  # mixed case
        bech32.encode("age", bytes(31)),  # wrong length
        bech32.encode("age", bytes(32)),  # low-order point
        bech32.encode("agex", os.urandom(32)),  # wrong type
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo",
    ],
)
def test_bad_recipients(bad: str) -> None:
    with pytest.raises(IdentityError):
        parse_recipient(bad)


def test_secret_key_given_as_recipient_is_not_echoed() -> None:
    with pytest.raises(IdentityError) as ei:
        parse_recipient(SPEC_IDENTITY)
    assert SPEC_IDENTITY not in ei.value.message and "private key" in ei.value.message


@pytest.mark.parametrize(
    "bad",
    [
        SPEC_IDENTITY.lower(),
        SPEC_IDENTITY[:-1] + "Q",
        bech32.encode("AGE-SECRET-KEY-", bytes(31)),
        bech32.encode("AGE-SECRET-KEY-X", bytes(32)),
    ],
)
def test_bad_identities_never_echo_the_secret(bad: str) -> None:
    with pytest.raises(IdentityError) as ei:
        parse_identity(bad)
    assert bad not in ei.value.message and bad.upper() not in ei.value.message


def test_x25519_stanza_rules() -> None:
    ident = X25519Identity.generate()
    stanza = ident.recipient().wrap(b"k" * 16)[0]
    assert stanza.type == "X25519" and len(stanza.args) == 1 and len(stanza.body) == 32
    assert ident.unwrap([stanza]) == b"k" * 16
    assert X25519Identity.generate().unwrap([stanza]) is None  # not ours: no match
    assert ident.unwrap([Stanza("x25519", stanza.args, stanza.body)]) is None  # other type
    for bad in (
        Stanza("X25519", [*stanza.args, "extra"], stanza.body),
        Stanza("X25519", [b64encode(os.urandom(33))], stanza.body),
        Stanza("X25519", [b64encode(bytes(32))], stanza.body),  # low order: zero secret
        Stanza("X25519", stanza.args, stanza.body + b"\x00"),  # long file key
    ):
        with pytest.raises(FormatError):
            ident.unwrap([bad])


# --- post-quantum hybrid ---------------------------------------------------------------------


def test_hybrid_round_trip() -> None:
    ident = HybridIdentity.generate()
    r = ident.recipient()
    s = str(r)
    assert s.startswith("age1pq1") and len(s) == 1959
    assert str(ident).startswith("AGE-SECRET-KEY-PQ-1") and str(ident).isupper()
    assert isinstance(parse_recipient(s), HybridRecipient) and parse_recipient(s) == r
    assert str(parse_identity(str(ident))) == str(ident)
    ct = encrypt_bytes(b"quantum", [r, HybridIdentity.generate().recipient()])
    assert decrypt_bytes(ct, [X25519Identity.generate(), ident]) == b"quantum"
    with pytest.raises(IdentityError):
        decrypt_bytes(ct, [HybridIdentity.generate()])


def test_hybrid_testkit_identity() -> None:
    ident = HybridIdentity.parse(TESTKIT_PQ_IDENTITY)
    assert str(ident) == TESTKIT_PQ_IDENTITY
    assert HybridRecipient.parse(str(ident.recipient())).public_bytes == ident.recipient().public_bytes


def test_cannot_mix_postquantum_and_classic() -> None:
    with pytest.raises(IdentityError, match="post-quantum"):
        encrypt_bytes(b"x", [HybridIdentity.generate().recipient(), X25519Identity.generate().recipient()])


# --- passphrases -----------------------------------------------------------------------------


def test_scrypt_round_trip_and_rules() -> None:
    ct = encrypt_bytes(b"secret", [ScryptRecipient("correct horse", work_factor=10)])
    assert b"-> scrypt " in ct and b" 10\n" in ct
    assert decrypt_bytes(ct, [scrypt_identity("correct horse")]) == b"secret"
    with pytest.raises(IdentityError):  # wrong passphrase: no match
        decrypt_bytes(ct, [scrypt_identity("wrong")])
    assert decrypt_bytes(ct, [scrypt_identity("wrong"), scrypt_identity("correct horse")]) == b"secret"
    with pytest.raises(FormatError, match="work factor too large"):
        decrypt_bytes(ct, [ScryptIdentity("correct horse", max_work_factor=9)])
    with pytest.raises(IdentityError, match="passphrase"):
        encrypt_bytes(b"x", [ScryptRecipient("a", 10), X25519Identity.generate().recipient()])
    with pytest.raises(IdentityError):
        encrypt_bytes(b"x", [ScryptRecipient("a", 10), ScryptRecipient("a", 10)])
    with pytest.raises(IdentityError):
        ScryptRecipient("")


def test_scrypt_default_work_factor_and_cap() -> None:
    assert ScryptRecipient("p").work_factor == 18
    assert scrypt_identity("p").max_work_factor == 22
    stanza = Stanza("scrypt", [b64encode(bytes(16)), "23"], bytes(32))
    with pytest.raises(FormatError, match="too large"):
        scrypt_identity("p").unwrap([stanza])


# --- identity files --------------------------------------------------------------------------


def test_parse_identities_with_comments() -> None:
    a, b = X25519Identity.generate(), HybridIdentity.generate()
    text = f"# created: x\n# public key: {a.recipient()}\n{a}\n\n   \n# another\n{b}\r\n"
    ids = parse_identities(text)
    assert [str(i) for i in ids] == [str(a), str(b)]
    assert str(ids[0].recipient()) == str(a.recipient())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no identities"),
        ("# only a comment\n\n", "no identities"),
        (f"{SPEC_RECIPIENT}\n", "public key"),
        (f"# ok\n{SPEC_IDENTITY}\nAGE-SECRET-KEY-1QQQQ\n", "line 3"),
        ("AGE-PLUGIN-YUBIKEY-1QQQQQQ\n", "plugin"),
        ("hello\n", "unknown identity"),
        ("age-encryption.org/v1\n-> scrypt ...", "encrypted"),
    ],
)
def test_parse_identities_errors(text: str, needle: str) -> None:
    with pytest.raises(IdentityError) as ei:
        parse_identities(text, source="key.txt")
    assert needle in ei.value.message


def test_load_identities_errors(tmp_path) -> None:
    with pytest.raises(IdentityError, match="not found") as ei:
        load_identities(tmp_path / "missing.txt")
    assert ei.value.hint
    with pytest.raises(IdentityError, match="directory"):
        load_identities(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(IdentityError, match="UTF-8"):
        load_identities(bad)
    if os.geteuid() != 0:
        locked = tmp_path / "locked.txt"
        locked.write_text(SPEC_IDENTITY)
        locked.chmod(0)
        with pytest.raises(IdentityError, match="permission denied"):
            load_identities(locked)


def test_identity_file_text_round_trip(tmp_path) -> None:
    ident = X25519Identity.generate()
    now = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone(timedelta(hours=1)))
    text = identity_file_text(ident, now=now)
    assert text == (f"# created: 2025-03-04T05:06:07+01:00\n# public key: {ident.recipient()}\n{ident}\n")
    path = tmp_path / "key.txt"
    path.write_text(identity_file_text(ident))
    [loaded] = load_identities(path)
    assert str(loaded) == str(ident)
    assert parse_recipients(f"# comment\n{ident.recipient()}\n") == [ident.recipient()]


def test_contains_secret_key() -> None:
    assert contains_secret_key(f"cameras:\n  key: {SPEC_IDENTITY}\n")
    assert contains_secret_key(SPEC_IDENTITY.lower())
    assert contains_secret_key(str(HybridIdentity.generate()))
    assert contains_secret_key("x AGE-PLUGIN-YUBIKEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQ y")
    assert not contains_secret_key(f"recipients: [{SPEC_RECIPIENT}]")
    assert not contains_secret_key("# never put an AGE-SECRET-KEY-1... line in this file")
    assert not contains_secret_key("")
