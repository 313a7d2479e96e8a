"""What the web app needs from its host: the store, accounts, status, audit log and settings.

`camrec run` (camrec.service.daemon) builds one with the live store; `camrec web serve --store`
builds one with a read-only store and no accounts (127.0.0.1 only). make_app (camrec.web.app)
takes it; every handler reaches it as `request.app[CONTEXT]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camrec.config.models import WebConfig
from camrec.sources.hub import PacketHub
from camrec.web.accounts import Accounts
from camrec.web.sessions import SessionStore
from camrec.web.throttle import LoginThrottle

# The `web:` config section is the settings object: lifetimes, listen addresses, TLS, state_dir.
WebSettings = WebConfig

# Live view's streams: camera → {"main": hub, "sub": hub (only when the camera has a sub-stream)}.
LiveHubs = Mapping[str, Mapping[str, PacketHub]]

STATE_DIR_NAME = ".web"  # under the storage directory; a dot keeps it apart from camera directories


def state_dir_for(settings: WebConfig, storage_root: Path) -> Path:
    """Where users, sessions and the TLS key live: `web.state_dir`, else `<storage>/.web`.

    Derived from the config alone, so `camrec user add -c CONFIG` and `camrec run -c CONFIG` find
    the same files whoever runs them and whatever their environment (docs/web.md, "Accounts")."""
    return settings.state_dir if settings.state_dir is not None else storage_root / STATE_DIR_NAME


@dataclass
class WebContext:
    store_root: Path  # the store (storage.path, or --store DIR)
    read_only_store: bool  # `web serve --store`: True; inside `camrec run`: False
    accounts: Accounts | None  # None = no login (web serve --store on 127.0.0.1 only)
    status: Callable[[], dict[str, Any]] | None  # the daemon's status document, or None
    audit: Callable[[dict[str, Any]], None]  # appends one entry to the hash-chained audit log
    settings: WebSettings  # the `web:` config section (lifetimes etc.)
    # Made by make_app when left None: sessions persisted in the state directory (in memory when
    # there are no accounts), and a fresh throttle. Tests inject them with a fake clock.
    sessions: SessionStore | None = None
    throttle: LoginThrottle | None = None
    clock: Callable[[], float] = field(default=time.time)
    # Live view's hubs; None where there are no cameras (`web serve --store`): live routes answer 404.
    live: LiveHubs | None = None
