"""`camrec list`, `camrec export` and `camrec decrypt`: reading what was recorded."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from camrec.commands.common import add_selection, iso, load_config, load_identities, select_clips
from camrec.errors import CamrecError, IdentityError, StorageError, UsageError

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("list", help="list recorded clips")
    add_selection(s)
    s.add_argument("--json", action="store_true", help="a JSON array on stdout")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("export", help="decrypt clips into playable MP4 files (needs the owner's identity)")
    add_selection(s)
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--force", action="store_true", help="replace MP4 files that already exist")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("decrypt", help="decrypt one age file (like `age -d`)")
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY")
    s.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(func=cmd_decrypt)


def clip_json(row: Any) -> dict[str, Any]:
    return {"camera": row.camera, "start": iso(row.start), "end": iso(row.end),
            "duration": round(row.duration, 3), "size": row.size, "path": row.path,
            "state": row.state, "thumbnail": row.thumb, "details": row.meta}


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows = select_clips(args, config)
    if args.json:
        json.dump([clip_json(r) for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no clips", file=sys.stderr)
        return 0
    print(f"{'CAMERA':<12} {'START':<29} {'DURATION':>8} {'SIZE':>10}  {'STATE':<9} PATH")
    for r in rows:
        print(f"{r.camera:<12} {iso(r.start):<29} {r.duration:>7.1f}s {r.size:>10}  {r.state:<9} {r.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from camrec.export import remux_encrypted
    from camrec.store import layout

    config = load_config(args.config)
    identities = load_identities(args.identity)
    rows = [r for r in select_clips(args, config) if r.state in ("complete", "partial")]
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {out_dir}: {exc.strerror}") from None
    if not rows:
        print("camrec: no clips match", file=sys.stderr)
        return 0
    root = Path(config.storage.path)
    first_error: CamrecError | None = None
    exported = 0
    bar = tqdm(rows, unit="clip", disable=not sys.stderr.isatty(), file=sys.stderr)
    for row in bar:
        name = row.path.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)] + ".mp4"
        dest = out_dir / name
        if dest.exists() and not args.force:
            tqdm.write(f"{dest}: exists, skipped (use --force to replace)", file=sys.stderr)
            continue
        try:
            result = remux_encrypted(root / row.path, identities, dest)
        except IdentityError:
            raise  # the wrong key fails every clip the same way: stop at the first
        except CamrecError as exc:
            tqdm.write(f"camrec: error: {row.path}: {exc.message}", file=sys.stderr)
            first_error = first_error or exc
            continue
        exported += 1
        note = " (cut short by a crash: exported its complete part)" if result.truncated else ""
        tqdm.write(f"{dest} ({result.duration:.1f}s){note}", file=sys.stdout)
    print(f"camrec: exported {exported} of {len(rows)} clip(s) to {out_dir}", file=sys.stderr)
    if first_error is not None:
        raise first_error
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    from camrec.crypto.stream import decrypt_stream

    identities = load_identities(args.identity)
    src = Path(args.file)
    try:
        f = open(src, "rb")  # noqa: SIM115 - closed in finally, also on errors below
    except OSError as exc:
        raise UsageError(f"cannot open {src}: {exc.strerror}") from None
    try:
        if args.output in (None, "-"):
            if sys.stdout.isatty():
                raise UsageError("refusing to write video to a terminal", hint="use -o FILE or a pipe")
            decrypt_stream(f, identities, sys.stdout.buffer)
            return 0
        dest = Path(args.output)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        try:
            with open(tmp, "wb") as out:
                decrypt_stream(f, identities, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return 0
    finally:
        f.close()
