"""`camrec doctor`: check what the systemd unit cannot guarantee (see camrec/service/doctor.py)."""

from __future__ import annotations

import argparse
import json
import sys

from camrec.commands.common import add_config, load_config
from camrec.redact import redact

ORDER = 25

_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(sub: argparse._SubParsersAction) -> None:
    from camrec.service.doctor import CHECK_NAMES

    s = sub.add_parser(
        "doctor", help="check the sandbox, storage, keys and cameras of an installed recorder",
        description="Checks what the systemd unit cannot guarantee: that outbound connections are blocked, "
                    "that the storage is writable and on the intended disk, that no private key is readable, "
                    "that every camera answers. Run it inside the service's sandbox with "
                    "`sudo systemctl start camrec-doctor`. Exit status: 0 if nothing failed (warnings allowed), "
                    "10 if a check failed (or warned, with --strict), 3 if the config is invalid.")
    add_config(s)
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.add_argument("--strict", action="store_true", help="treat warnings as failures")
    s.add_argument("--skip", action="append", default=[], choices=CHECK_NAMES, metavar="CHECK",
                   help=f"skip a check (repeatable): {', '.join(CHECK_NAMES)}; e.g. --skip cameras when a "
                        "camera allows only the recorder's RTSP session")
    s.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from camrec.service.doctor import ChecksFailed, Options, run_checks

    # Camera secrets are resolved only when the camera check runs (it connects to them).
    config = load_config(args.config, secrets="cameras" not in args.skip)
    results = run_checks(config, Options(skip=frozenset(args.skip)))
    bad = {"fail", "warn"} if args.strict else {"fail"}
    failed = [r for r in results if r.status in bad]
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail", "skip")}

    if args.json:
        json.dump({"ok": not failed, "counts": counts, "checks": [r.to_json() for r in results]}, sys.stdout,
                  indent=2)
        print()
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{_MARK[r.status]}  {r.name:<{width}}  {redact(r.message)}")
            for detail in r.details:
                print(f"      {'':<{width}}  {redact(detail)}")
        print(f"camrec doctor: {counts['pass']} ok, {counts['warn']} warning(s), {counts['fail']} failed, "
              f"{counts['skip']} skipped")
    sys.stdout.flush()  # the report first, then the error line on stderr
    if failed:
        names = ", ".join(dict.fromkeys(r.name for r in failed))
        raise ChecksFailed(f"{len(failed)} check(s) {'failed' if not args.strict else 'failed or warned'}: {names}",
                           hint="see the FAIL/WARN lines above; docs/service.md explains each check")
    return 0
