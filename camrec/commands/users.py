"""`camrec user add|list|passwd|remove`: the web app's accounts (docs/web.md, "Accounts").

There is no default user and no default password. Run these as the user the recorder runs as
(`sudo -u camrec camrec user add -c /etc/camrec/config.yaml NAME`): the users file is that user's
0600 file in the web state directory. Passwords are read twice from the terminal without echo, or
from the first line of `--password-file`; they are never printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
import sys
from pathlib import Path

from camrec.commands.common import add_config, load_config
from camrec.errors import StorageError, UsageError

ORDER = 60
MAX_PASSWORD_FILE = 64 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("user", help="web app accounts: add, list, passwd, remove")
    actions = u.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    for name, text in (("add", "add a web user (asks for the password twice)"),
                       ("passwd", "change a web user's password (ends their sessions)")):
        s = actions.add_parser(name, help=text)
        add_config(s)
        s.add_argument("name", metavar="NAME")
        s.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
        s.set_defaults(func=cmd_user)
    s = actions.add_parser("list", help="list the web users")
    add_config(s)
    s.set_defaults(func=cmd_user)
    s = actions.add_parser("remove", help="remove a web user (ends their sessions)")
    add_config(s)
    s.add_argument("name", metavar="NAME")
    s.set_defaults(func=cmd_user)


def read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        path = Path(args.password_file)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_PASSWORD_FILE + 1)
        except OSError as exc:
            raise StorageError(f"cannot read the password file {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_PASSWORD_FILE:
            raise UsageError(f"{path} is too large to be a password file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not UTF-8 text") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise UsageError(f"the first line of {path} is empty")
        return lines[0]
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password", hint="use --password-file FILE")
    first = getpass.getpass("New web password: ")
    from camrec.web.accounts import check_password

    check_password(first)
    if getpass.getpass("Repeat it: ") != first:
        raise UsageError("the two passwords differ; nothing changed")
    return first


def refuse_other_owner(state_dir: Path, storage: Path) -> None:
    """The web state belongs to the user the recorder runs as: files made by root (or anyone else)
    would be unreadable to it, and the web app would not start. Refused before anything is made."""
    for path in (state_dir, storage):
        try:
            owner = os.stat(path).st_uid
        except OSError:
            continue
        if owner != os.geteuid():
            try:
                name = pwd.getpwuid(owner).pw_name
            except KeyError:
                name = str(owner)
            raise UsageError(f"{path} belongs to user {name}, not to you: the recorder could not read what "
                             "this command writes", hint=f"run it as that user: sudo -u {name} camrec …")
        return


def cmd_user(args: argparse.Namespace) -> int:
    from camrec.web.accounts import Accounts, check_name, check_password
    from camrec.web.context import state_dir_for

    config = load_config(args.config, secrets=False)
    state_dir = state_dir_for(config.web, config.storage.path)
    if args.user_command != "list":
        refuse_other_owner(state_dir, config.storage.path)
    accounts = Accounts(state_dir)
    action = args.user_command
    if action == "list":
        users = accounts.users()
        if not users:
            print(f"camrec: no web users in {accounts.path}", file=sys.stderr)
        for user in users:
            print(user.name)
        return 0
    name = check_name(args.name)
    if action == "remove":
        accounts.remove(name)
        print(f"removed web user {name}; their sessions are over")
        return 0
    if action == "add" and name in accounts.names():
        raise UsageError(f"user {name!r} already exists", hint="change the password with camrec user passwd")
    if action == "passwd" and name not in accounts.names():
        raise UsageError(f"no such user {name!r}", hint="camrec user list shows the users")
    password = check_password(read_password(args))
    if action == "add":
        accounts.add(name, password)
        print(f"added web user {name} ({accounts.path})")
        if not config.web.enabled:
            print("note: the web app is switched off in the config (web.enabled: false)")
    else:
        accounts.set_password(name, password)
        print(f"changed the password of {name}; their sessions are over")
    return 0
