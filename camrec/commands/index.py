"""`camrec index rebuild`: a new clip index from the clip files and the signed manifest.

The recorder does the same by itself when it starts and finds the index unreadable, or missing
while clips exist; this command is for doing it on demand (with the recorder stopped: a running
recorder puts its own open index back in place). How the rows are recovered: camrec/store/rebuild.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camrec.commands.common import add_config, load_config
from camrec.errors import StorageError

ORDER = 45


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("index", help="maintain the clip index (a cache of the clip files and the manifest)")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(s))
    r = actions.add_parser("rebuild", help="build the index anew from the clip files and the manifest; "
                                           "the old file is kept as index.sqlite3.damaged-/old-<time>")
    add_config(r)
    r.set_defaults(func=cmd_rebuild)


def cmd_rebuild(args: argparse.Namespace) -> int:
    from camrec.store import layout
    from camrec.store.index import ClipIndex, IndexDamaged
    from camrec.store.rebuild import rebuild_index

    config = load_config(args.config)
    root = Path(config.storage.path)
    if not root.is_dir():
        raise StorageError(f"storage directory {root} does not exist")
    path = root / layout.INDEX_NAME
    reason, tag = "asked for with `camrec index rebuild`", "old"
    if path.exists() or path.is_symlink():
        try:
            ClipIndex(path, rebuild=False).close()
        except IndexDamaged as exc:
            reason, tag = exc.message, "damaged"
    try:
        result = rebuild_index(root, reason=reason, tag=tag)
    except OSError as exc:
        raise StorageError(f"cannot write a new index in {root}: {exc.strerror or exc}",
                           hint="run it as the storage directory's owner (the service user)") from None
    print(f"camrec: rebuilt {path}: {result.summary()}", file=sys.stderr)
    if result.kept is not None:
        print(f"camrec: the previous index is kept as {result.kept}", file=sys.stderr)
    if not result.manifest_used:
        print("camrec: warning: the manifest could not be used (no readable device key, or it is not a regular "
              "file): clips are listed from their files only (state partial, no durations)", file=sys.stderr)
    for rel, kind in result.refused:
        print(f"camrec: warning: ignored {layout.escaped(rel)}: it is {kind}", file=sys.stderr)
    return 0
