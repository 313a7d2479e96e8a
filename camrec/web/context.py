"""What the web app gets from whoever starts it (`camrec run` or `camrec web serve --store`).

The web layer may not import the service or the owner's tools, so the daemon's status and the
audit log writer come in as plain callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Stand-ins until the server helper's accounts module and the `web:` config model are merged
# (this file is the server helper's; the dataclass below is the shared interface, unchanged).
Accounts = Any
WebSettings = Any


@dataclass
class WebContext:
    store_root: Path                     # the store (storage.path, or --store DIR)
    read_only_store: bool                # `web serve --store`: True; inside `camrec run`: False
    accounts: Accounts | None            # None = no login (web serve --store on 127.0.0.1 only)
    status: Callable[[], dict] | None    # the daemon's status document (cameras' states), or None
    audit: Callable[[dict], None]        # appends one entry to the hash-chained audit log
    settings: WebSettings                # the `web:` config section (lifetimes etc.)
