"""`camrec run`, `camrec check` and `camrec demo`: the recorder side."""

from __future__ import annotations

import argparse

from camrec.commands.common import load_config
from camrec.errors import UsageError
from camrec.redact import redact

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("run", help="record the configured cameras (the daemon)")
    s.add_argument("-c", "--config", required=True, metavar="CONFIG")
    s.add_argument("--duration", metavar="SPAN", help="stop after this long (e.g. 60s); default: until signalled")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate the config and connect to every camera once")
    s.add_argument("-c", "--config", required=True, metavar="CONFIG")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("demo", help="record a synthetic camera for ~20 s with a throw-away key, then export")
    s.add_argument("--dir", metavar="DIR", help="where to put the demo (default: a new directory under /tmp)")
    s.add_argument("--duration", default="20s", metavar="SPAN", help="how long to record (default 20s)")
    s.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from camrec.cli import setup_logging
    from camrec.daemon import Daemon
    from camrec.timeparse import parse_duration

    config = load_config(args.config)
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
    from camrec.errors import SourceError
    from camrec.sources import make_source

    config = load_config(args.config)
    failures: list[SourceError] = []
    for name, cam in config.cameras.items():
        for role, url in (("source", cam.source), ("detect_source", cam.detect_source)):
            if not url:
                continue
            src = make_source(url, transport=cam.rtsp_transport, open_timeout=cam.open_timeout,
                              read_timeout=cam.read_timeout)
            try:
                info = src.open()
                if src.read() is None:
                    raise SourceError(f"{redact(url)}: the stream ended at once")
                print(f"{name}.{role}: ok ({info.describe()})")
            except SourceError as exc:
                print(f"{name}.{role}: FAILED: {exc.message}")
                failures.append(SourceError(f"camera {name!r} ({role}): {exc.message}", exc.hint))
            finally:
                src.close()
    if failures:
        raise failures[0]
    print(f"config ok: {len(config.cameras)} camera(s), storage {config.storage.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from camrec.demo import run_demo

    return run_demo(args)
