"""`camrec bench crypto`: age encryption/decryption throughput, camrec against the `age` binary.

Both sides do the same job in the same run: a plaintext file of --size bytes is encrypted to an
X25519 recipient into a file, and that file is decrypted into another file. camrec runs in this
process through the code the recorder and `camrec decrypt`/`export` use (AgeWriter fed by large
reads, decrypt_stream from file to file); `age` runs as a process (`age -r KEY -o OUT IN`,
`age -d -i KEY -o OUT IN`), its start-up included (a few milliseconds). Runs alternate between
the two so that cache and frequency effects hit both alike; each is repeated --repeat times and
the median throughput is reported, with the camrec/age ratio per direction. Nothing is fsynced
by either side: this measures the crypto path, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from camrec.errors import UsageError

# Large reads amortise Python's per-call cost; AgeWriter seals whole batches of chunks from it.
_READ_SIZE = 4 << 20


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("crypto", help="age encrypt/decrypt throughput: camrec vs the `age` binary")
    s.add_argument("--size", default="200MB", metavar="SIZE", help="plaintext size (default 200MB)")
    s.add_argument("--dir", metavar="DIR", help="where to put the test files (default: a temporary directory)")
    s.add_argument("--repeat", type=int, default=5, metavar="N", help="runs per tool and direction (>= 3)")
    s.add_argument("--age", default="age", metavar="PATH", help="the age binary (default: age on PATH)")
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.set_defaults(func=cmd_bench_crypto)


def camrec_encrypt(src: Path, dst: Path, recipients: list) -> None:
    from camrec.crypto.stream import AgeWriter

    buf = bytearray(_READ_SIZE)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        w = AgeWriter(out, recipients)
        while n := f.readinto(buf):
            w.write(view[:n])
        w.close()


def camrec_decrypt(src: Path, dst: Path, identities: list) -> None:
    from camrec.crypto.stream import decrypt_stream

    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        decrypt_stream(f, identities, out)


def _timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _unlink(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode:
        raise UsageError(f"{' '.join(cmd[:2])} failed: {proc.stderr.decode(errors='replace').strip()}")


def run_bench(size: int, work: Path, repeat: int, age: str, log: Callable[[str], None]) -> dict:
    from camrec.crypto.keys import X25519Identity, identity_file_text

    ident = X25519Identity.generate()
    key = work / "bench.key"
    key.write_text(identity_file_text(ident))
    recipient = str(ident.recipient())
    plain = work / "plain"
    log(f"writing {size / 1e6:.0f} MB of random plaintext to {plain}")
    with open(plain, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    ours, theirs = work / "camrec.age", work / "age.age"
    ours_out, theirs_out = work / "camrec.out", work / "age.out"
    times: dict[str, list[float]] = {k: [] for k in ("camrec_enc", "age_enc", "camrec_dec", "age_dec")}
    # One untimed round first: warms the page cache and imports for both sides.
    camrec_encrypt(plain, ours, [ident.recipient()])
    _run([age, "-r", recipient, "-o", str(theirs), str(plain)])
    camrec_decrypt(ours, ours_out, [ident])
    for i in range(repeat):
        # Outputs are removed before each timed run: truncating a 200 MB file in the page cache
        # costs more than encrypting it, and would be charged to whichever side came second.
        _unlink(ours, theirs)
        times["camrec_enc"].append(_timed(camrec_encrypt, plain, ours, [ident.recipient()]))
        times["age_enc"].append(_timed(_run, [age, "-r", recipient, "-o", str(theirs), str(plain)]))
        # Each decrypts the other's file too (alternating), which doubles as an interop check.
        src_ours, src_theirs = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        _unlink(ours_out, theirs_out)
        times["camrec_dec"].append(_timed(camrec_decrypt, src_ours, ours_out, [ident]))
        times["age_dec"].append(_timed(_run, [age, "-d", "-i", str(key), "-o", str(theirs_out), str(src_theirs)]))
        log(f"run {i + 1}/{repeat}: " + ", ".join(f"{k} {size / t[-1] / 1e6:.0f} MB/s" for k, t in times.items()))
    for out in (ours_out, theirs_out):
        if out.stat().st_size != size:
            raise UsageError(f"benchmark output {out} has the wrong size")
    mbps = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
    return {
        "size": size,
        "repeat": repeat,
        "age_version": subprocess.run([age, "--version"], capture_output=True, text=True).stdout.strip(),
        "mb_per_s": {k: round(v, 1) for k, v in mbps.items()},
        "ratio": {"encrypt": round(mbps["camrec_enc"] / mbps["age_enc"], 2),
                  "decrypt": round(mbps["camrec_dec"] / mbps["age_dec"], 2)},
    }


def cmd_bench_crypto(args: argparse.Namespace) -> int:
    from camrec.timeparse import parse_size

    try:
        size = parse_size(args.size)
    except ValueError as exc:
        raise UsageError(f"bad --size: {exc}") from None
    if size <= 0:
        raise UsageError("--size must be positive")
    if args.repeat < 3:
        raise UsageError("--repeat must be at least 3 (the median of fewer runs means little)")
    age = shutil.which(args.age)
    if age is None:
        raise UsageError(f"the age binary {args.age!r} was not found", hint="install it (Debian: apt-get install age)")

    def log(msg: str) -> None:
        print(f"camrec: {msg}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="camrec-bench-", dir=args.dir) as tmp:
        result = run_bench(size, Path(tmp), args.repeat, age, log)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    m, r = result["mb_per_s"], result["ratio"]
    print(f"plaintext {size / 1e6:.0f} MB, median of {args.repeat} runs, {result['age_version'] or 'age'}")
    print(f"{'direction':<10} {'camrec MB/s':>12} {'age MB/s':>10} {'camrec/age':>11}")
    print(f"{'encrypt':<10} {m['camrec_enc']:>12.0f} {m['age_enc']:>10.0f} {r['encrypt']:>10.2f}x")
    print(f"{'decrypt':<10} {m['camrec_dec']:>12.0f} {m['age_dec']:>10.0f} {r['decrypt']:>10.2f}x")
    return 0
