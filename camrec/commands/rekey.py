"""`camrec rekey`: re-wrap existing clips for a new set of recipients (camrec/owner/rekey.py does the work).

The answer to "a key was lost" or "a family member left": every file of the selected clips
(video, thumbnail, details; complete and partial clips; never one being recorded) gets a new
header for the recipients listed in --recipients FILE, with its payload untouched. Needs an
identity that opens the clips now. One file failing leaves that file as it was and the run goes
on; the exit code is then that of the first failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from camrec.commands.common import (
    add_passphrase_file,
    add_selection,
    config_path,
    load_identities,
    owner_config,
    select_clips,
)
from camrec.errors import CamrecError, IdentityError, StorageError, UsageError
from camrec.owner import audit
from camrec.store import untrusted

ORDER = 40
REKEY_STATES = ("complete", "partial")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("rekey", help="re-wrap existing clips for a new set of recipients (header only)")
    add_selection(s)
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY",
                   help="identity that opens the clips now (repeatable)")
    s.add_argument("--recipients", required=True, metavar="FILE",
                   help="the new recipients: one age1… or age1pq1… key per line, # comments allowed")
    s.add_argument("--dry-run", action="store_true", help="open every header and report, but change nothing")
    add_passphrase_file(s)
    s.set_defaults(func=cmd_rekey)


def read_recipients(path: str) -> list[Any]:
    from camrec.crypto.keys import parse_recipients
    from camrec.owner.rekey import check_recipients

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read recipients file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    recipients = parse_recipients(text, source=f"recipients file {path}")
    check_recipients(recipients)
    return recipients


def _open_manifest(root: Path) -> Any:
    """The store's signed manifest, if it has one (stores from before it have none)."""
    from camrec.store.manifest import MANIFEST_NAME, Manifest

    return Manifest(root) if (root / MANIFEST_NAME).exists() else None


def _clip_size(root: Path, rels: list[str]) -> int:
    from camrec.store import layout

    return sum(layout.regular_size(root, rel) or 0 for rel in rels)


def clip_files(root: Path, video: str) -> list[str]:
    """Every file of a clip, found by name (video, thumbnail, details), not from the index: after a
    rebuilt or lost index a thumbnail the index doesn't list must still lose the revoked key. Only
    Whatever exists under a clip file's name is returned, without following a link: the caller
    re-keys regular files and reports anything else (a link left behind would still open with the
    revoked key). A path that isn't a clip path gives nothing."""
    from camrec.store import layout

    if layout.parse_relpath(video) is None or not video.endswith(layout.VIDEO_SUFFIX):
        return []
    found = []
    for rel in (layout.sibling(video, suffix) for suffix in layout.CLIP_SUFFIXES):
        try:
            if layout.lstat_file(root, rel) is None:
                continue
        except OSError:
            pass  # a link or non-directory on the way: reported by the caller's checked open
        found.append(rel)
    return found


def _open_index(root: Path) -> Any:
    """The index, to update sizes; None if it is damaged or gone (the next rebuild takes the sizes
    from the files, and the manifest entries this rekey writes)."""
    from camrec.store import layout
    from camrec.store.index import ClipIndex

    path = root / layout.INDEX_NAME
    if not path.exists() or path.is_symlink():
        return None
    try:
        return ClipIndex(path, rebuild=False)
    except CamrecError as exc:
        print(f"camrec: warning: {exc.message}; re-keying without updating it", file=sys.stderr)
        return None


def _record(manifest: Any, row: Any, rels: list[str]) -> None:
    """A `rekey` entry listing every file re-keyed, with the clip's times as its manifest already
    says them (a row rebuilt from file names alone has no duration: it must not erase it)."""
    from camrec.store.camtime import parse_utc

    last = manifest.latest(row.path) or {}
    start = parse_utc(last.get("start"))
    end = parse_utc(last.get("end"))
    manifest.record_closed(row.camera, row.path, start=row.start if start is None else start,
                           end=row.end if end is None else end, kind="rekey", files=rels)


def cmd_rekey(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from camrec.owner.rekey import rekey_file, storage_lock
    from camrec.store import layout

    config = owner_config(args)
    recipients = read_recipients(args.recipients)
    identities, _ = load_identities(args)
    new_set = {str(r) for r in recipients}
    if not any(str(i.recipient()) in new_set for i in identities):
        print("camrec: warning: none of the identities given with -i is among the new recipients; make sure "
              "someone holds an identity for them, or the clips become unreadable", file=sys.stderr)
    # Rows whose paths are not clip paths are reported and left alone (camrec/store/untrusted.py).
    untrusted.check_metadata(Path(config.storage.path))
    rows, _ = untrusted.checked_rows(select_clips(args, config), lambda m: print(m, file=sys.stderr))
    todo = [r for r in rows if r.state in REKEY_STATES]
    skipped = len(rows) - len(todo)
    root = Path(config.storage.path)
    by_clip = {row.path: clip_files(root, row.path) for row in todo}
    total = sum(len(rels) for rels in by_clip.values())
    done = missing = 0
    failures: list[CamrecError] = []
    with storage_lock(root):
        # Re-keying unwraps every file key (which opens the clip as well as a decryption does):
        # audited like a decrypt, before the first header is opened (docs/tamper-evidence.md).
        if total:
            audit.record("rekey", files=[rel for rels in by_clip.values() for rel in rels],
                         recipients=audit.recipients_of(identities), storage_root=root)
        index = None if args.dry_run else _open_index(root)
        # Opened before any file changes, so a store whose manifest (or device key) we can't use
        # fails with nothing touched (docs/tamper-evidence.md, M4).
        manifest = None if args.dry_run else _open_manifest(root)
        try:
            bar = tqdm(total=total, unit="file", disable=not sys.stderr.isatty(), file=sys.stderr)
            for row in todo:
                rels = by_clip[row.path]
                if not rels:
                    missing += 1
                    if layout.parse_relpath(row.path) is None:
                        failures.append(StorageError(f"{layout.escaped(row.path)}: not a clip path"))
                        tqdm.write(f"camrec: error: {layout.escaped(row.path)}: not a clip path; skipped",
                                   file=sys.stderr)
                    continue
                changed = False
                failed_before = len(failures)
                for rel in rels:
                    bar.update(1)
                    path = root / rel
                    try:
                        # Only a regular file reached without a link (never re-key through one).
                        untrusted.check_file(root, rel)
                    except FileNotFoundError:
                        missing += 1  # retention may have removed it meanwhile
                        continue
                    except OSError as exc:
                        failures.append(StorageError(f"cannot read {rel}: {exc.strerror or exc}"))
                        tqdm.write(f"camrec: error: {rel}: {exc.strerror or exc}", file=sys.stderr)
                        continue
                    except untrusted.UnsafeFileError as exc:
                        failures.append(untrusted.UnsafeFileError(f"{rel}: {exc.message}"))
                        tqdm.write(f"camrec: error: {rel}: {exc.message}", file=sys.stderr)
                        continue
                    try:
                        result = rekey_file(path, identities, recipients, dry_run=args.dry_run,
                                            remove_stale_tmp=True)
                    except IdentityError as exc:
                        if not done and not failures:
                            # The first file already fails: the identity is wrong for the whole
                            # store, so stop before reporting it for every file.
                            raise IdentityError(f"{rel}: {exc.message}", hint="give the identity the clips are "
                                                "encrypted to now (an interrupted rekey: give the old and the new "
                                                "one, -i OLD -i NEW)") from None
                        failures.append(exc)
                        tqdm.write(f"camrec: error: {rel}: {exc.message}", file=sys.stderr)
                        continue
                    except CamrecError as exc:
                        failures.append(exc)
                        tqdm.write(f"camrec: error: {rel}: {exc.message}", file=sys.stderr)
                        continue
                    done += 1
                    changed = True
                    if args.dry_run:
                        tqdm.write(f"{rel}: header {result.old_header} -> {result.new_header} bytes", file=sys.stdout)
                if changed and index is not None:
                    # The row's size is the bytes on disk of all its files (headers grew or shrank).
                    index.update(row.id, size=_clip_size(root, rels))
                if changed and manifest is not None and len(failures) > failed_before:
                    # Recording now would sign the digest of the file that failed (perhaps an
                    # altered one) as good: `camrec verify` keeps reporting this clip instead.
                    tqdm.write(f"camrec: warning: {row.path}: not recorded in the manifest (a file of the clip "
                               "failed); `camrec verify` will report it", file=sys.stderr)
                elif changed and manifest is not None:
                    # The signed manifest must learn the new digests, or `camrec verify` reports
                    # the clip as altered. Failing here leaves it so until rekey runs again (M4).
                    try:
                        _record(manifest, row, rels)
                    except CamrecError as exc:
                        failures.append(exc)
                        tqdm.write(f"camrec: error: {row.path}: re-keyed, but not recorded in the manifest: "
                                   f"{exc.message}", file=sys.stderr)
            bar.close()
        finally:
            if index is not None:
                index.close()
            if manifest is not None:
                manifest.close()
    verb = "would re-key" if args.dry_run else "re-keyed"
    print(f"camrec: {verb} {done} file(s) of {len(todo)} clip(s) for {len(recipients)} recipient(s)"
          + (f"; {skipped} clip(s) skipped (recording or missing)" if skipped else "")
          + (f"; {missing} file(s) gone" if missing else "")
          + (f"; {len(failures)} file(s) failed and were left unchanged" if failures else ""), file=sys.stderr)
    if set(config.recipients) != new_set and not args.dry_run:
        where = "the recorder's config" if getattr(args, "store", None) else config_path(args)
        print(f"camrec: hint: clips recorded from now on still go to the recipients in {where}: set its "
              "`recipients` (or recipients_file) to the new set and restart the recorder", file=sys.stderr)
    if failures:
        raise failures[0]
    return 0
