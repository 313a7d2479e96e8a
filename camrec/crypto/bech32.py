"""Bech32 (BIP 173) as age uses it: the checksum and the 5-bit alphabet, no length limit.

Bech32 is an encoding, not cryptography, so it is written here rather than pulled in as a
dependency. age drops BIP 173's 90-character limit because post-quantum keys are ~2,000
characters long; everything else (mixed-case rejection, checksum over the lower-case form,
strict zero padding) follows the BIP.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """Malformed Bech32 string. Callers turn it into a user-facing error."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    # The checksum is always computed over the lower-case HRP, so an upper-case string
    # (as age writes secret keys) has the same checksum as its lower-case form.
    h = hrp.lower()
    return [ord(c) >> 5 for c in h] + [0] + [ord(c) & 31 for c in h]


def _convert_bits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value >> frombits:
            raise Bech32Error("invalid data value")
        acc = ((acc << frombits) | value) & 0xFFFFFFFF
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits:
        # More leftover bits than one input group: the encoder padded too much.
        raise Bech32Error("illegal zero padding")
    elif (acc << (tobits - bits)) & maxv:
        # Non-zero padding would make two strings decode to the same bytes.
        raise Bech32Error("non-zero padding")
    return out


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise Bech32Error("empty human-readable part")
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise Bech32Error("invalid character in human-readable part")


def encode(hrp: str, data: bytes) -> str:
    """Encode data under hrp. An upper-case hrp gives an all upper-case string (age's secret keys)."""
    _check_hrp(hrp)
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise Bech32Error("mixed-case human-readable part")
    values = _convert_bits(data, 8, 5, pad=True)
    lower_hrp = hrp.lower()
    mod = _polymod([*_hrp_expand(lower_hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(mod >> (5 * (5 - i))) & 31 for i in range(6)]
    s = lower_hrp + "1" + "".join(CHARSET[v] for v in values + checksum)
    return s if hrp == lower_hrp else s.upper()


def decode(s: str) -> tuple[str, bytes]:
    """Decode s; returns (hrp as written, data). Raises Bech32Error on any defect."""
    if s.lower() != s and s.upper() != s:
        raise Bech32Error("mixed case")
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise Bech32Error("separator '1' at invalid position")
    hrp = s[:pos]
    _check_hrp(hrp)
    try:
        values = [_CHARSET_REV[c] for c in s[pos + 1 :].lower()]
    except KeyError:
        raise Bech32Error("invalid character in data part") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("invalid checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))
