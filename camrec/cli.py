"""The `camrec` command: subcommands, error → exit code mapping, --json output.

Errors are one line on stderr in age's style (`camrec: error: …`, then `camrec: hint: …`), with the
exit codes documented in camrec/errors.py and README.md. Tracebacks appear only for bugs, and only
with --debug.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from camrec import __version__
from camrec.errors import EXIT_INTERRUPTED, CamrecError, IdentityError, StorageError, UsageError
from camrec.redact import RedactingFilter, redact

log = logging.getLogger("camrec")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def setup_logging(level: str = "info", debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Under systemd the journal adds the time; on a terminal it helps.
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("libav").setLevel(logging.ERROR)


def iso(t: float) -> str:
    """ISO 8601 with the local UTC offset, to the millisecond."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def _time_arg(text: str | None) -> float | None:
    if text is None:
        return None
    from camrec.timeparse import parse_time_arg

    try:
        return parse_time_arg(text, datetime.now().astimezone()).timestamp()
    except ValueError as exc:
        raise UsageError(f"bad time {text!r}: {exc}",
                         hint="use ISO 8601 (2026-11-21T18:00) or a span like 30m, 2h, 1d") from None


def _load_config(path: str) -> Any:
    from camrec.config import load_config

    return load_config(path)


def _load_identities(paths: list[str]) -> list[Any]:
    from camrec.crypto.keys import load_identities

    identities: list[Any] = []
    for p in paths:
        identities.extend(load_identities(p))
    return identities


# -- keygen ------------------------------------------------------------------------------------------

def cmd_keygen(args: argparse.Namespace) -> int:
    from camrec.crypto.keys import X25519Identity, identity_file_text

    identity = X25519Identity.generate()
    text = identity_file_text(identity)
    recipient = str(identity.recipient())
    if args.output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        print(f"Public key: {recipient}", file=sys.stderr)
        return 0
    path = Path(args.output)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite an identity",
                         hint="choose another file name, or move the old identity away first") from None
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    print(recipient)
    if sys.stderr.isatty():
        print(f"camrec: wrote the identity to {path}; keep it off the recorder and back it up", file=sys.stderr)
    return 0


# -- run / check -------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from camrec.daemon import Daemon
    from camrec.timeparse import parse_duration

    config = _load_config(args.config)
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

    config = _load_config(args.config)
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


# -- list ---------------------------------------------------------------------------------------------

def _open_index(config: Any) -> Any:
    from camrec.store import layout
    from camrec.store.index import ClipIndex

    return ClipIndex(Path(config.storage.path) / layout.INDEX_NAME, readonly=True)


def _select(args: argparse.Namespace, config: Any) -> list[Any]:
    if args.camera and args.camera not in config.cameras:
        raise UsageError(f"no camera named {args.camera!r} in {args.config}",
                         hint="cameras: " + ", ".join(config.cameras))
    since, until = _time_arg(args.since), _time_arg(args.until)
    index = _open_index(config)
    try:
        return index.query(camera=args.camera, since=since, until=until,
                           states=("recording", "complete", "partial", "missing"))
    finally:
        index.close()


def clip_json(row: Any) -> dict[str, Any]:
    return {"camera": row.camera, "start": iso(row.start), "end": iso(row.end),
            "duration": round(row.duration, 3), "size": row.size, "path": row.path,
            "state": row.state, "thumbnail": row.thumb, "details": row.meta}


def cmd_list(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    rows = _select(args, config)
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


# -- export / decrypt ---------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from camrec.export import remux_encrypted
    from camrec.store import layout

    config = _load_config(args.config)
    identities = _load_identities(args.identity)
    rows = [r for r in _select(args, config) if r.state in ("complete", "partial")]
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

    identities = _load_identities(args.identity)
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


# -- argument parsing ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="camrec", description="Local-first camera recorder: motion clips as age-encrypted files.")
    p.add_argument("--version", action="version", version=f"camrec {__version__}")
    p.add_argument("--debug", action="store_true", help="verbose logs and tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("keygen", help="create an owner identity (private key) and print its public key")
    s.add_argument("-o", "--output", metavar="FILE", help="write the identity here (mode 0600, never overwritten)")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("run", help="record the configured cameras (the daemon)")
    s.add_argument("-c", "--config", required=True, metavar="CONFIG")
    s.add_argument("--duration", metavar="SPAN", help="stop after this long (e.g. 60s); default: until signalled")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate the config and connect to every camera once")
    s.add_argument("-c", "--config", required=True, metavar="CONFIG")
    s.set_defaults(func=cmd_check)

    def selection(s: argparse.ArgumentParser) -> None:
        s.add_argument("-c", "--config", required=True, metavar="CONFIG")
        s.add_argument("--camera", metavar="NAME")
        s.add_argument("--since", metavar="TIME", help="ISO 8601 time or a span ago (30m, 2h, 1d)")
        s.add_argument("--until", metavar="TIME", help="ISO 8601 time or a span ago")

    s = sub.add_parser("list", help="list recorded clips")
    selection(s)
    s.add_argument("--json", action="store_true", help="a JSON array on stdout")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("export", help="decrypt clips into playable MP4 files (needs the owner's identity)")
    selection(s)
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--force", action="store_true", help="replace MP4 files that already exist")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("decrypt", help="decrypt one age file (like `age -d`)")
    s.add_argument("-i", "--identity", action="append", required=True, metavar="IDENTITY")
    s.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    s.add_argument("file", metavar="FILE")
    s.set_defaults(func=cmd_decrypt)

    s = sub.add_parser("demo", help="record a synthetic camera for ~20 s with a throw-away key, then export")
    s.add_argument("--dir", metavar="DIR", help="where to put the demo (default: a new directory under /tmp)")
    s.add_argument("--duration", default="20s", metavar="SPAN", help="how long to record (default 20s)")
    s.set_defaults(func=_cmd_demo)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from camrec.demo import run_demo

    return run_demo(args)


def _fail(exc: CamrecError) -> int:
    print(f"camrec: error: {redact(exc.message)}", file=sys.stderr)
    if exc.hint:
        print(f"camrec: hint: {redact(exc.hint)}", file=sys.stderr)
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    debug = False
    try:
        args = parser.parse_args(argv)
        debug = args.debug
        if not logging.getLogger().handlers:
            setup_logging("info", debug)
        return int(args.func(args))
    except CamrecError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print("camrec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 1
    except Exception as exc:  # a bug: one line for the user, the traceback only when asked for
        log.debug("internal error", exc_info=True)
        print(f"camrec: error: internal error: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        if not debug:
            print("camrec: hint: this is a bug; run again with --debug for the traceback and report it",
                  file=sys.stderr)
        return 1
