"""`camrec verify` (clips against the signed manifest) and `camrec audit` (who decrypted what)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from camrec.commands.common import add_config, add_passphrase_file, load_identities, owner_config
from camrec.errors import IntegrityError, StorageError, UsageError
from camrec.printable import escape_controls

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("verify", help="check the recorded clips against the signed manifest (tamper evidence)")
    add_config(s, store=True)
    s.add_argument("-i", "--identity", action="append", default=[], metavar="IDENTITY",
                   help="also decrypt every clip fully and check its authentication (logged in the audit log)")
    s.add_argument("--json", action="store_true", help="a JSON report on stdout")
    s.add_argument("--expect-head", action="append", default=[], metavar="SEQ:HASH|FILE",
                   help="a manifest head saved earlier (or a file of them): detects a rewritten chain")
    s.add_argument("--save-head", metavar="FILE", help="when all is well, append the current head to FILE")
    s.add_argument("--device-key", metavar="FILE",
                   help="trust this device public key instead of <storage>/device-signing.pub")
    s.add_argument("--quick", action="store_true", help="check presence and sizes only, without hashing")
    s.add_argument("--retention-days", type=float, metavar="DAYS",
                   help="the retention deletions are checked against (default: storage.retention_days of CONFIG)")
    add_passphrase_file(s)
    s.set_defaults(func=cmd_verify)

    a = sub.add_parser("audit", help="show the audit log of decryptions and exports")
    where = a.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="CONFIG", help="the store's log (<storage>/audit.jsonl) "
                       "of the store this config records into")
    where.add_argument("--store", metavar="DIR", help="the log of this store directory (<DIR>/audit.jsonl)")
    where.add_argument("--log", metavar="FILE", help="this log (default: your own, ~/.local/state/camrec/audit.jsonl)")
    a.add_argument("--json", action="store_true", help="the entries as a JSON array on stdout")
    a.add_argument("--verify", action="store_true", help="check the hash chain; exit 7 if it is broken")
    a.add_argument("--expect-head", action="append", default=[], metavar="SEQ:HASH|FILE",
                   help="an audit head saved earlier: detects a rewritten log")
    a.set_defaults(func=cmd_audit)


def cmd_verify(args: argparse.Namespace) -> int:
    from camrec.owner.verify import parse_heads, verify_store

    config = owner_config(args)
    root = Path(config.storage.path)
    heads = parse_heads(args.expect_head)
    if args.retention_days is not None and not 0 < args.retention_days < 1e6:
        raise UsageError(f"--retention-days {args.retention_days:g}: expected a number of days above 0")
    identities = load_identities(args)[0] if args.identity else None

    def audit_entry(files: list[str]) -> None:
        # verify -i releases no plaintext, but it is a use of the identity on these files.
        from camrec.owner import audit

        audit.record("verify", files=files, recipients=audit.recipients_of(identities or []), storage_root=root)

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    report = verify_store(root, identities=identities, heads=heads,
                          device_key=Path(args.device_key) if args.device_key else None, quick=args.quick,
                          retention_days=(config.storage.retention_days if args.retention_days is None
                                          else args.retention_days), max_size=config.storage.max_size,
                          before_decrypt=audit_entry, progress=progress if sys.stderr.isatty() else None)
    if bar is not None:
        bar.close()
    head = f"{report.head[0]}:{report.head[1]}"
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for f in report.findings:
            print(f"{f.kind:<17} {escape_controls(f.path or '-')}: {escape_controls(f.detail)}")
        what = "sizes checked" if args.quick else f"{report.bytes_hashed / 1e6:.1f} MB hashed"
        if report.decrypted:
            what += f", {report.decrypted} file(s) decrypted"
        print(f"checked {report.clips} clip(s), {report.files} file(s), {what} in {report.seconds:.2f} s: "
              f"{len(report.problems)} problem(s), {len(report.notices)} notice(s)")
        print(f"manifest head {head} ({report.entries} entries, device key {report.key or 'none'})")
    if not report.ok:
        raise IntegrityError(f"{len(report.problems)} problem(s) in {root}",
                             hint="see docs/tamper-evidence.md for what each finding means")
    if args.save_head:
        _save_head(Path(args.save_head), head, root)
    return 0


def _save_head(path: Path, head: str, root: Path) -> None:
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        with open(path, "a") as f:
            f.write(f"{head}  # {stamp} {root}\n")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from camrec.commands.common import iso
    from camrec.owner import audit
    from camrec.owner.verify import parse_heads

    if args.config or args.store:
        path = Path(owner_config(args).storage.path) / audit.AUDIT_NAME
    else:
        path = Path(args.log) if args.log else audit.state_log_path()
    heads = parse_heads(args.expect_head)
    chk = audit.read(path, heads)
    # Everything in a log is text someone else may have written: escaped before it is printed.
    shown = escape_controls(path)
    problems = [f"{shown}:{n}: {escape_controls(detail)}" for n, detail in chk.problems]
    problems += [f"{shown}: {escape_controls(p)}" for p in chk.head_problems]
    entries = [line.entry for line in chk.lines if line.entry is not None]
    if args.json:
        json.dump(entries, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not entries:
        print(f"camrec: no audit entries in {shown}", file=sys.stderr)
    else:
        print(f"{'SEQ':>5} {'TIME':<29} {'WHO':<24} {'EVENT':<8} {'FILES':>5}  FIRST FILE / RECIPIENTS")
        for e in entries:
            files = e.get("files")
            files = files if isinstance(files, list) else []
            recipients = e.get("recipients")
            recipients = recipients if isinstance(recipients, list) else []
            who = escape_controls(f"{e.get('user')}@{e.get('host')}")
            event = escape_controls(e.get("event") or e.get("kind", "?"))
            what = escape_controls(files[0] if files else _live_text(e) if event.startswith("live-") else "-")
            print(f"{escape_controls(e.get('seq', '?')):>5} {escape_controls(_local(e.get('time'), iso)):<29} "
                  f"{who:<24.24} {event:<8} {len(files):>5}  {what}  "
                  f"{escape_controls(', '.join(_short(str(r)) for r in recipients))}")
    if entries and not args.json:
        print(f"audit head {chk.head[0]}:{chk.head[1]} ({shown})")
    if chk.torn is not None:
        print(f"camrec: note: {shown} ends in an unfinished line ({len(chk.torn)} bytes; a crash); "
              "the next entry cuts it", file=sys.stderr)
    if problems:
        if args.verify:
            for p in problems:
                print(f"chain-break {p}", file=sys.stderr if args.json else sys.stdout)
            raise IntegrityError(f"the audit log {shown} was altered ({len(problems)} problem(s))",
                                 hint="someone edited, removed or reordered entries")
        print(f"camrec: warning: the audit log's hash chain is broken ({len(problems)} problem(s)); "
              "run with --verify for details", file=sys.stderr)
    return 0


def _live_text(e: dict[str, Any]) -> str:
    """A live view entry (camrec.web.live): which stream, how, from where, and for how long."""
    text = f"live {e.get('camera')}/{e.get('stream')} {e.get('kind')} from {e.get('client')}"
    if isinstance(e.get("seconds"), int | float):
        text += f", {e['seconds']:.0f} s, {e.get('dropped')} packet(s) dropped ({e.get('reason')})"
    return text


def _short(recipient: str) -> str:
    return recipient if len(recipient) <= 24 else f"{recipient[:12]}…{recipient[-8:]}"


def _local(t: object, iso: Any) -> str:
    """Entry times are UTC strings; shown in local time like `camrec list` does."""
    if not isinstance(t, str):
        return "?"
    try:
        return str(iso(datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()))
    except ValueError:
        return t
