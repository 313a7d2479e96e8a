"""`camrec list`, `camrec export` and `camrec decrypt`: reading what was recorded.

Identities (`-i`) may be any identity file: X25519 or post-quantum keys, several per file, with
comments, or such a file protected by a passphrase. Passphrases are asked on the terminal, or
read from `--passphrase-file` by scripts (camrec/crypto/passphrase.py).

`decrypt` on a clip cut by a crash (no final chunk), exit code 8 in every case:
  -o OUT             nothing is left at OUT (temporary file, removed), hint to use --salvage
  --salvage -o OUT   OUT holds exactly the authenticated prefix; stderr says where the cut is
  to stdout          the authenticated prefix is written, then the error (what `age -d` does)
Bytes of a chunk that failed authentication are never written, in any mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from camrec.commands.common import (
    add_passphrase_file,
    add_selection,
    iso,
    load_identities,
    owner_config,
    select_clips,
)
from camrec.errors import CamrecError, IdentityError, IntegrityError, StorageError, TruncatedError, UsageError
from camrec.owner import audit
from camrec.printable import escape_controls
from camrec.store import untrusted
from camrec.store.listing import clip_json

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("list", help="list recorded clips")
    add_selection(s)
    s.add_argument("--json", action="store_true", help="a JSON array on stdout")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("export", help="decrypt clips into playable MP4 files (needs the owner's identity)")
    add_selection(s)
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY",
                   help="identity file (repeatable; a passphrase-protected one is asked for its passphrase)")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--force", action="store_true",
                   help="replace MP4 files that already exist (never an identity file)")
    add_passphrase_file(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("decrypt", help="decrypt one age file (like `age -d`)")
    s.add_argument("-i", "--identity", action="append", metavar="IDENTITY",
                   help="identity file (repeatable); not needed for a passphrase-encrypted file")
    s.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    s.add_argument("--force", action="store_true",
                   help="replace OUT if it exists (never an identity file or the input)")
    s.add_argument("--salvage", action="store_true",
                   help="for a clip cut by a crash, keep its authenticated prefix in OUT (still exit code 8)")
    add_passphrase_file(s)
    s.add_argument("file", metavar="FILE", help="the age file (binary or ASCII-armored); - for standard input")
    s.set_defaults(func=cmd_decrypt)


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _usable_rows(args: argparse.Namespace, config: Any) -> tuple[list[Any], int]:
    """The selected index rows whose paths are clip paths; the others are reported and counted."""
    untrusted.check_metadata(Path(config.storage.path))
    return untrusted.checked_rows(select_clips(args, config), _warn)


def cmd_list(args: argparse.Namespace) -> int:
    config = owner_config(args)
    rows, _ = _usable_rows(args, config)
    if args.json:
        json.dump([clip_json(r) for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no clips", file=sys.stderr)
        return 0
    print(f"{'CAMERA':<12} {'START':<29} {'DURATION':>8} {'SIZE':>10}  {'STATE':<9} PATH")
    for r in rows:
        print(f"{escape_controls(r.camera):<12} {iso(r.start):<29} {r.duration:>7.1f}s {r.size:>10}  "
              f"{escape_controls(r.state):<9} {r.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from camrec.owner.export import OutputError, remux_encrypted

    config = owner_config(args)
    identities, _ = load_identities(args)
    rows, hostile = _usable_rows(args, config)
    # `recording` here means a live recorder is writing it (without one, select_clips made it
    # `partial`): exported up to now, or named if it has no complete fragment yet. Never hidden.
    rows = [r for r in rows if r.state in ("complete", "partial", "recording")]
    root = Path(config.storage.path)
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {out_dir}: {exc.strerror}") from None
    _refuse_output_in_store(out_dir, root)
    if not rows:
        print("camrec: no clips match", file=sys.stderr)
        return _hostile_rows(hostile)
    _probe_writable(out_dir)
    protected = _protected_files(args.identity, args.passphrase_file)
    todo = [r for r in rows if args.force or not os.path.lexists(out_dir / _export_name(r.path))]
    if todo:
        # Before any plaintext exists: no audit entry, no export (docs/tamper-evidence.md).
        audit.record("export", files=[r.path for r in todo], recipients=audit.recipients_of(identities),
                     storage_root=root)
    first_error: CamrecError | None = None
    exported = 0
    still_recording: list[str] = []
    bar = tqdm(rows, unit="clip", disable=not sys.stderr.isatty(), file=sys.stderr)
    for row in bar:
        dest = out_dir / _export_name(row.path)
        try:
            if os.path.lexists(dest):
                if not args.force:
                    tqdm.write(f"{dest}: exists, skipped (use --force to replace)", file=sys.stderr)
                    continue
                _refuse_protected(dest, protected, "an identity or passphrase file")
            src = os.fdopen(untrusted.open_file(root, row.path), "rb")
        except OSError as exc:
            error: CamrecError = StorageError(f"cannot read {row.path}: {exc.strerror or exc}")
        except untrusted.UnsafeFileError as exc:
            error = untrusted.UnsafeFileError(f"{row.path}: {exc.message}")
        except CamrecError as exc:
            error = exc
        else:
            try:
                result = remux_encrypted(root / row.path, identities, dest, src_file=src)
            except (IdentityError, OutputError):
                raise  # the wrong key, or an unwritable output, fails every clip the same way: stop
            except TruncatedError as exc:
                if row.state != "recording":
                    error = exc
                else:  # just started: not one complete fragment yet
                    still_recording.append(row.path)
                    continue
            except CamrecError as exc:
                error = exc
            else:
                exported += 1
                if row.state == "recording":
                    note = " (still being recorded: exported up to now)"
                elif result.truncated:
                    note = " (cut short by a crash: exported its complete part)"
                else:
                    note = ""
                tqdm.write(f"{dest} ({result.duration:.1f}s){note}", file=sys.stdout)
                continue
        message = error.message if error.message.startswith(row.path) else f"{row.path}: {error.message}"
        tqdm.write(f"camrec: error: {escape_controls(message)}", file=sys.stderr)
        first_error = first_error or error
    print(f"camrec: exported {exported} of {len(rows)} clip(s) to {out_dir}", file=sys.stderr)
    if still_recording:
        print(f"camrec: skipped {len(still_recording)} clip(s) still recording, with no complete video "
              f"fragment yet ({', '.join(still_recording)}); run again after they close", file=sys.stderr)
    if first_error is not None:
        raise first_error
    return _hostile_rows(hostile)


def _hostile_rows(n: int) -> int:
    """Rows that are not clip paths were skipped (and each reported): the store is not what
    camrec wrote, which the exit code says (7) even when everything else went well."""
    if n:
        raise IntegrityError(f"{n} index row(s) skipped: their paths are not clip paths (the index was altered)",
                             hint="run `camrec verify`; see docs/tamper-evidence.md")
    return 0


def _refuse_output_in_store(out_dir: Path, root: Path) -> None:
    """Plaintext never goes into the store: it would sit beside the ciphertext it came from."""
    with contextlib.suppress(OSError):
        if out_dir.resolve().is_relative_to(root.resolve()):
            raise UsageError(f"refusing to export into the storage directory {root}",
                             hint="choose an output directory outside the store with -o")


def _probe_writable(out_dir: Path) -> None:
    """Fails once, clearly, for an output directory nothing can be written to (read-only, full)."""
    from camrec.owner.export import create_private

    probe = out_dir / f".camrec-probe.{os.getpid()}"
    try:
        os.close(create_private(probe))
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"cannot write to {out_dir}: {exc.strerror or exc}",
                           hint="nothing was exported; choose a writable output directory with -o") from None


def _protected_files(identities: list[str] | None, passphrase_file: str | None,
                     inputs: tuple[str, ...] = ()) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) of the files an output must never replace, even with --force: the
    identity files, the passphrase file and the inputs. Compared by inode, so a symlink or hard
    link to one of them is caught too."""
    out: dict[tuple[int, int], str] = {}
    for kind, names in (("identity file", identities or []), ("passphrase file", [passphrase_file] if
                        passphrase_file else []), ("input", list(inputs))):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.stat(name)
                out[(st.st_dev, st.st_ino)] = f"the {kind} {name}"
    return out


def _refuse_protected(dest: Path, protected: dict[tuple[int, int], str], what: str) -> None:
    try:
        st = os.stat(dest)  # follows a symlink: the file it leads to is the one at stake
    except OSError:
        return
    if (name := protected.get((st.st_dev, st.st_ino))) is not None:
        raise UsageError(f"refusing to write {dest}: it is {name}", hint=f"never replaced, not even with --force "
                         f"(it is {what}); choose another output")


def _export_name(video_rel: str) -> str:
    from camrec.store import layout

    return video_rel.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)] + ".mp4"


def cmd_decrypt(args: argparse.Namespace) -> int:
    from camrec.crypto.passphrase import LazyScryptIdentity

    dest = None if args.output in (None, "-") else Path(args.output)
    if dest is not None:
        _check_output(dest, args)
    identities, passphrases = load_identities(args)
    # Before any plaintext exists: the owner's decryptions leave a trace (the per-user log; and the
    # live store's own log when the file lies in one).
    audit.record("decrypt", files=[] if args.file == "-" else [args.file],
                 recipients=audit.recipients_of(identities))
    # Asks for a passphrase only if the file turns out to have an scrypt stanza (as `age -d`).
    lazy = LazyScryptIdentity(passphrases)
    identities.append(lazy)
    name = "standard input" if args.file == "-" else args.file
    if args.file == "-":
        if sys.stdin.isatty():
            raise UsageError("refusing to read an age file from the terminal", hint="give a FILE, or pipe one in")
        src: Any = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 - closed in finally, also on errors below
        except OSError as exc:
            raise UsageError(f"cannot open {args.file}: {exc.strerror}") from None
    try:
        if dest is None:
            if sys.stdout.isatty():
                raise UsageError("refusing to write video to a terminal", hint="use -o FILE or a pipe")
            _decrypt_to(src, identities, sys.stdout.buffer, name, None, args, lazy)
            return 0
        from camrec.owner.export import create_private

        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        try:
            with os.fdopen(create_private(tmp), "wb") as out:
                try:
                    _decrypt_to(src, identities, out, name, dest, args, lazy)
                except TruncatedError:
                    if not args.salvage:
                        raise
                    _commit(out, tmp, dest, args.force)  # the salvaged prefix is the output
                    raise
                _commit(out, tmp, dest, args.force)
        except FileExistsError as exc:
            if exc.filename == str(dest) or exc.filename2 == str(dest):
                raise UsageError(f"{dest} already exists", hint="use --force to replace it") from None
            raise UsageError(f"temporary file {tmp} already exists", hint="remove it and try again") from None
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return 0
    finally:
        if src is not sys.stdin.buffer:
            src.close()


def _check_output(dest: Path, args: argparse.Namespace) -> None:
    """Before anything is decrypted: -o must not name a directory, an identity file or the input
    (never, even with --force), nor an existing file without --force."""
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory", hint="-o takes the output file's name")
    inputs = () if args.file == "-" else (args.file,)
    _refuse_protected(dest, _protected_files(args.identity, args.passphrase_file, inputs),
                      "an input of this command")
    if os.path.lexists(dest) and not args.force:
        raise UsageError(f"{dest} already exists", hint="use --force to replace it")


def _commit(out: Any, tmp: Path, dest: Path, force: bool) -> None:
    """Puts the finished temporary file in place. Without --force by a hard link, which fails if
    `dest` appeared meanwhile; with it, by rename, which replaces a link rather than writing
    through it."""
    out.flush()
    os.fsync(out.fileno())
    if force:
        os.replace(tmp, dest)
    else:
        os.link(tmp, dest)


def _decrypt_to(src: Any, identities: list[Any], out: Any, name: str, dest: Path | None,
                args: argparse.Namespace, lazy: Any) -> None:
    """decrypt_stream with the CLI's messages for a missing identity and for a cut file."""
    from camrec.crypto.stream import decrypt_stream

    try:
        decrypt_stream(src, identities, out)
    except IdentityError:
        if not args.identity and not lazy.asked:
            raise IdentityError(f"{name} is encrypted to public keys, and no identity was given",
                                hint="pass the owner's identity file with -i FILE") from None
        raise
    except TruncatedError as exc:
        recording = args.file != "-" and _being_recorded(Path(args.file))
        raise _truncated_message(exc, name, dest, args.salvage, recording) from None


def _being_recorded(path: Path) -> bool:
    """Whether `path` is a clip a live recorder is writing right now (its index row says
    `recording` and the storage's recorder lock is held): then a missing final chunk means "not
    finished yet", not "cut by a crash"."""
    from camrec.store.index_copy import open_owner_index
    from camrec.store.lock import recorder_running

    root = audit.find_store_root(path)
    if root is None or not recorder_running(root):
        return False
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        index = open_owner_index(root)
    except (ValueError, OSError, CamrecError):
        return False
    try:
        return any(r.path == rel and r.state == "recording" for r in index.query(states=("recording",)))
    except CamrecError:
        return False
    finally:
        index.close()


def _truncated_message(exc: TruncatedError, name: str, dest: Path | None, salvage: bool,
                       recording: bool = False) -> TruncatedError:
    """Says the file is truncated, where (plaintext and ciphertext offsets), and what was written."""
    n = exc.authenticated_bytes
    offset = getattr(exc, "ciphertext_offset", None)
    where = f"byte {offset} of the file" if offset is not None else "the cut"
    if getattr(exc, "inside_chunk", False):
        where += ", then a partial or damaged chunk"
    if recording:
        head = f"{name} is still being recorded: {n} authenticated bytes so far ({where})"
    else:
        head = f"{name} is truncated: no final chunk after {n} authenticated bytes ({where})"
    export_hint = ("`camrec export` turns a cut clip, or one still being recorded, into a playable MP4 "
                   "(up to its last complete fragment)")
    if dest is None:
        message = f"{head}; they were written to standard output"
        hint = "the output is the clip's authenticated prefix, nothing after the cut; " + export_hint
    elif salvage:
        message = f"{head}; salvaged them to {dest}"
        hint = export_hint
    else:
        message = f"{head}; nothing was written to {dest}"
        hint = f"`camrec decrypt --salvage` keeps the {n} authenticated bytes; " + export_hint
    error = TruncatedError(message, hint, n)
    error.ciphertext_offset = offset  # type: ignore[attr-defined]
    return error
