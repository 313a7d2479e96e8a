"""The `camrec` command: subcommands, error → exit code mapping, --json output.

Errors are one line on stderr in age's style (`camrec: error: …`, then `camrec: hint: …`), with the
exit codes documented in camrec/errors.py and README.md. Tracebacks appear only for bugs, and only
with --debug.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
from typing import Any, NoReturn

from camrec import __version__
from camrec.errors import EXIT_INTERRUPTED, GROUP_HINT, CamrecError, StorageError, UsageError
from camrec.printable import escape_controls
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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="camrec", description="Local-first camera recorder: motion clips as age-encrypted files.")
    p.add_argument("--version", action="version", version=f"camrec {__version__}")
    p.add_argument("--debug", action="store_true", help="verbose logs and tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in command_modules():
        module.register(sub)
    return p


def command_modules() -> list[Any]:
    """Every module in camrec.commands with a `register(subparsers)` function, in ORDER."""
    import camrec.commands

    modules = []
    for info in pkgutil.iter_modules(camrec.commands.__path__):
        module = importlib.import_module(f"camrec.commands.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _fail(exc: CamrecError) -> int:
    # Messages may quote a store's file names or entries: printed with control characters escaped.
    print(f"camrec: error: {escape_controls(redact(exc.message))}", file=sys.stderr)
    if exc.hint:
        print(f"camrec: hint: {escape_controls(redact(exc.hint))}", file=sys.stderr)
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
    except PermissionError as exc:  # the recorder's files, read without its group: expected, not a bug
        return _fail(StorageError(f"permission denied: {exc.filename or exc}", hint=GROUP_HINT))
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
