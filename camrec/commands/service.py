"""`camrec run`, `camrec check` and `camrec demo`: the recorder side."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from camrec.commands.common import add_config, config_path, load_config, owner_config
from camrec.config.files import refuse_example_recipient, refuse_missing_storage, refuse_unsafe_permissions
from camrec.errors import UsageError

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("run", help="record the configured cameras (the daemon)")
    add_config(s)
    s.add_argument("--duration", metavar="SPAN", help="stop after this long (e.g. 60s); default: until signalled")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate the config and connect to every camera once")
    add_config(s)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("status", help="what the running recorder is doing, per camera")
    add_config(s, store=True)
    s.add_argument("--json", action="store_true", help="the status document as JSON on stdout")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("demo", help="record a synthetic camera for ~20 s with a throw-away key, then export; "
                                   "the web app runs meanwhile on 127.0.0.1")
    s.add_argument("--dir", metavar="DIR", help="where to put the demo (default: a new directory under /tmp)")
    s.add_argument("--duration", default="20s", metavar="SPAN", help="how long to record (default 20s)")
    s.add_argument("--serve", action="store_true",
                   help="keep the web app serving the demo's clips after the recording, until Ctrl-C")
    s.add_argument("--port", type=int, default=0, metavar="PORT",
                   help="the web app's port on 127.0.0.1 (default: a free one)")
    s.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from camrec.cli import setup_logging
    from camrec.service.daemon import Daemon
    from camrec.timeparse import parse_duration

    config = load_config(args.config)
    refuse_unsafe_permissions(config)
    refuse_example_recipient(config)
    refuse_missing_storage(config)
    setup_logging(config.log_level, args.debug)
    duration = None
    if args.duration is not None:
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            raise UsageError(f"bad --duration: {exc}") from None
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.run(duration=duration)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validates the config and connects to every camera once."""
    from camrec.errors import ConfigError, SourceError
    from camrec.service.doctor import probe_camera
    from camrec.service.setup_report import short_recipient, storage_lines

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if len(exc.problems) < 2:
            raise
        for message, hint in exc.problems:  # every problem at once, not one per run
            print(f"camrec: error: {message}", file=sys.stderr)
            if hint:
                print(f"camrec: hint: {hint}", file=sys.stderr)
        raise ConfigError(f"{len(exc.problems)} errors in {config_path(args)}",
                          hint="fix them all, then run camrec check again") from None
    refuse_unsafe_permissions(config)
    refuse_example_recipient(config)
    for recipient in config.recipients:
        print(f"recipient: {short_recipient(recipient)}  (compare with the public key camrec keygen printed)")
    for line in storage_lines(config):
        print(line)
    failures: list[SourceError] = []
    for name, cam in config.cameras.items():
        for role, url in (("source", cam.source), ("detect_source", cam.detect_source)):
            if not url:
                continue
            try:
                info = probe_camera(cam, url)
                print(f"{name}.{role}: ok ({info.describe()})")
            except SourceError as exc:
                print(f"{name}.{role}: FAILED: {exc.message}")
                failures.append(SourceError(f"camera {name!r} ({role}): {exc.message}", exc.hint))
    if failures:
        raise failures[0]
    print(f"config ok: {len(config.cameras)} camera(s), storage {config.storage.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from camrec.commands.demo import run_demo

    return run_demo(args)


# The daemon rewrites its status every second; older than this means it is stuck or gone.
STATUS_STALE_SECONDS = 10.0


def print_subscribers(hubs: Any) -> None:
    """One line per stream: each subscriber of its hub with its queue depth and what it dropped."""
    if not isinstance(hubs, dict):
        return  # a status file of an older camrec
    for role, hub in hubs.items():
        parts = []
        for sub in hub.get("subscriptions", []) if isinstance(hub, dict) else []:
            text = f"{sub.get('name')} {sub.get('depth')} queued, {sub.get('dropped')} dropped"
            if sub.get("gaps"):
                text += f" ({sub['gaps']} gap(s))"
            parts.append(text)
        if parts:
            print(f"    {role} stream: {'; '.join(parts)}")
        # Live viewers are hub subscribers named "viewer <kind> <user>@<address>" (camrec.web.live).
        viewers = [str(s.get("name")) for s in (hub.get("subscriptions", []) if isinstance(hub, dict) else [])
                   if str(s.get("name", "")).startswith("viewer ")]
        if viewers:
            kinds = sorted({v.split()[1] for v in viewers if len(v.split()) > 1})
            print(f"    {role} stream: {len(viewers)} live viewer(s) ({', '.join(kinds)})")


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the recorder runs and every camera delivers video; 4 when a camera doesn't; 1 when
    the recorder isn't running (or its status is stale); 9 when it can't store clips (a full disk)
    or a camera's clips all fail (also after such a failure stopped it)."""
    import json
    import sys
    import time
    from datetime import datetime

    from camrec.errors import CamrecError, SourceError, StorageError
    from camrec.service.daemon import find_status

    config = owner_config(args)
    path = find_status(config.storage.path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CamrecError(f"no status from a running recorder ({path})",
                          hint="is `camrec run` (the camrec service) running with this config?") from None
    age = time.time() - float(doc.get("time", 0))
    alive = doc.get("state") == "running" and age < STATUS_STALE_SECONDS and _pid_alive(int(doc.get("pid", 0)))
    if args.json:
        json.dump({**doc, "alive": alive, "age": round(age, 1)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        since = datetime.fromtimestamp(float(doc.get("started_at", 0))).astimezone().isoformat(timespec="seconds")
        print(f"recorder: {'running' if alive else 'NOT RUNNING'} (pid {doc.get('pid')}, since {since}, "
              f"status {age:.0f}s old)")
        if doc.get("storage_error"):
            print(f"  STORAGE: {doc['storage_error']}")
        for name, cam in doc.get("cameras", {}).items():
            main = cam["streams"].get("main", {})
            line = f"  {name}: {cam['state']}"
            if main.get("stream"):
                line += f", {main['stream']}"
            line += f", {cam['clips_written']} clip(s) this run"
            if main.get("error"):
                line += f", last error: {main['error']}"
            if main.get("retry_at"):
                retry = datetime.fromtimestamp(float(main["retry_at"])).astimezone()
                line += f", next try at {retry:%H:%M:%S}"
            if cam.get("storage_error"):
                line += f", STORAGE: {cam['storage_error']}"
            if cam.get("failing"):
                line += f", UNHEALTHY: {cam['failing']}"
            print(line)
            print_subscribers(cam.get("hubs"))
        ahead = doc.get("clock_suspect")
        if isinstance(ahead, (int, float)):  # docs/storage.md "Retention and the clock"
            print(f"  clock: the wall clock is {ahead / 86400:.1f} days ahead of camrec's own clock (stepped, or "
                  "the recorder was off); clips are aged by camrec's clock")
    failing = [f"{n}: {c['failing']}" for n, c in doc.get("cameras", {}).items() if c.get("failing")]
    if failing:
        raise StorageError(f"recording is failing: {'; '.join(failing)}", hint="see the recorder's log")
    if not alive:
        raise CamrecError("the recorder is not running", hint=f"its last status is {age:.0f}s old ({path})")
    if doc.get("storage_error"):
        raise StorageError(f"the recorder runs but cannot store clips: {doc['storage_error']}")
    down = [n for n, c in doc.get("cameras", {}).items() if c["state"] not in ("connected", "recording")]
    if down:
        raise SourceError(f"camera(s) not delivering video: {', '.join(down)}")
    return 0


def _pid_alive(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to the service user
        return True
    return True
