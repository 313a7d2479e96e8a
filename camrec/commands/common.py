"""Helpers shared by the subcommands: time arguments, loading config and identities, selection."""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camrec.errors import GROUP_HINT, StorageError, UsageError
from camrec.store.listing import iso, parse_time_bound, rows_as_cut_without_recorder

__all__ = ["iso", "rows_as_cut_without_recorder", "time_arg"]  # iso and the rule moved to camrec.store.listing


def time_arg(text: str | None) -> float | None:
    return None if text is None else parse_time_bound(text)


DEFAULT_CONFIG = "/etc/camrec/config.yaml"
ENV_CONFIG = "CAMREC_CONFIG"
CONFIG_HELP = f"the config file (default: ${ENV_CONFIG}, else {DEFAULT_CONFIG})"
STORE_HELP = ("a store directory on its own, without a config: a disk pulled from the recorder, or a copy "
              "made with rsync -a")


def config_path(args: argparse.Namespace) -> str:
    """-c, else $CAMREC_CONFIG, else the installed service's config."""
    return getattr(args, "config", None) or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG


def load_config(path: str | None, *, secrets: bool = True) -> Any:
    from camrec.config import load_config

    return load_config(path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG, secrets=secrets)


def add_config(s: argparse.ArgumentParser, *, store: bool = False) -> None:
    """-c (optional: see config_path) and, for the owner's commands, --store DIR instead."""
    if not store:
        s.add_argument("-c", "--config", metavar="CONFIG", help=CONFIG_HELP)
        return
    where = s.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="CONFIG", help=CONFIG_HELP)
    where.add_argument("--store", metavar="DIR", help=STORE_HELP)


@dataclass
class _StoreSettings:
    path: Path
    retention_days: float | None = None  # unknown without the config: verify then checks order only
    max_size: int | None = None


@dataclass
class StoreOnly:
    """What the owner's read-only commands need of a config, from a store directory alone."""

    storage: _StoreSettings
    cameras: dict[str, None] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)


_CAMERA_DIR = re.compile(r"[A-Za-z0-9_-]{1,32}")


def store_only(directory: str) -> StoreOnly:
    root = Path(directory)
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise UsageError(f"--store {directory}: no such directory") from None
    except OSError as exc:
        raise StorageError(f"--store {directory}: {exc.strerror or exc}", hint=GROUP_HINT) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"--store {directory}: not a directory", hint="give the storage directory itself")
    try:
        # Camera names from the camera directories (never following a link out of the store).
        names = sorted(e.name for e in os.scandir(root)
                       if e.is_dir(follow_symlinks=False) and _CAMERA_DIR.fullmatch(e.name))
    except OSError as exc:
        raise StorageError(f"--store {directory}: {exc.strerror or exc}", hint=GROUP_HINT) from None
    return StoreOnly(_StoreSettings(root), dict.fromkeys(names))


def owner_config(args: argparse.Namespace) -> Any:
    """The config of an owner-side command: --store DIR alone, or the config file read without
    resolving camera secrets (these commands never use them; the owner's shell doesn't have them)."""
    if getattr(args, "store", None):
        return store_only(args.store)
    return load_config(config_path(args), secrets=False)



def add_passphrase_file(s: argparse.ArgumentParser) -> None:
    s.add_argument("--passphrase-file", metavar="FILE",
                   help="read the passphrase (for a passphrase-protected identity file or a passphrase-encrypted "
                        "file) from the first line of FILE instead of asking on the terminal")


def load_identities(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The identities of every -i file, and the passphrase source used for them."""
    from camrec.crypto.keys import load_identity_files
    from camrec.crypto.passphrase import PassphraseSource

    passphrases = PassphraseSource(args.passphrase_file)
    return load_identity_files(args.identity or [], passphrases), passphrases


def add_selection(s: argparse.ArgumentParser) -> None:
    """-c or --store, --camera/--since/--until, shared by the commands that pick clips from the index."""
    add_config(s, store=True)
    s.add_argument("--camera", metavar="NAME")
    s.add_argument("--since", metavar="TIME",
                   help="ISO 8601, a span ago (30m, 2h, 1d), today, yesterday, a weekday (mon) or 09:30")
    s.add_argument("--until", metavar="TIME", help="the same forms as --since")


def open_index(config: Any) -> Any:
    """The store's index, read-only. When it is damaged (or missing while clips exist), the rows
    are computed from the clip files and the signed manifest instead, read-only, with a warning:
    `list` and `export` keep working on a copy whose index an SD card damaged
    (docs/storage.md, "Rebuilding the index"). Nothing is written into the store, not even SQLite's
    -wal/-shm files (camrec/store/index_copy.py)."""
    from camrec.store import layout
    from camrec.store.index import REBUILD_HINT, IndexDamaged
    from camrec.store.index_copy import open_owner_index
    from camrec.store.rebuild import RowsView, clip_rows, device_public_key

    root = Path(config.storage.path)
    try:
        index = open_owner_index(root)
    except IndexDamaged as exc:
        why = exc.message
    except StorageError as exc:
        if (root / layout.INDEX_NAME).exists() or not root.is_dir() or not layout.iter_video_files(root):
            raise
        why = exc.message
    else:
        try:
            index.query(states=("garbage",))  # reads the schema and a page: damage shows here
            return index
        except IndexDamaged as exc:
            index.close()
            why = exc.message
        except BaseException:
            index.close()
            raise
    rows, _, used = clip_rows(root, device_public_key(root))
    print(f"camrec: warning: {why}; listing from the clip files"
          + (" and the signed manifest" if used else " (no usable manifest: no durations)"), file=sys.stderr)
    print(f"camrec: hint: {REBUILD_HINT}", file=sys.stderr)
    return RowsView(rows)


def select_clips(args: argparse.Namespace, config: Any) -> list[Any]:
    if args.camera and args.camera not in config.cameras:
        where = f"--store {args.store}" if getattr(args, "store", None) else config_path(args)
        raise UsageError(f"no camera named {args.camera!r} in {where}",
                         hint="cameras: " + ", ".join(config.cameras))
    since, until = time_arg(args.since), time_arg(args.until)
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {args.since} is after --until {args.until}",
                         hint="swap them: --since is the earlier time")
    index = open_index(config)
    try:
        rows = index.query(camera=args.camera, since=since, until=until,
                           states=("recording", "complete", "partial", "missing"))
    finally:
        index.close()
    return rows_as_cut_without_recorder(Path(config.storage.path), rows)
