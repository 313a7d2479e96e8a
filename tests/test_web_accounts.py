"""Web accounts and sessions (issue 11, item 3): the users file (argon2id, 0600, atomic, never
through a link), session expiry (idle and absolute, with an injected clock), logout, and a changed
password or a removed user ending that user's sessions, also when `camrec user` changes the file
from another process. The sessions file holds only hashes of the ids, and survives a restart."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from camrec.config.models import WebConfig
from camrec.errors import StorageError, UsageError
from camrec.web.accounts import Accounts
from camrec.web.sessions import hash_id
from tests.support.web_server import FAST_HASHER, PASSWORD, WebHarness

HOUR = 3600.0


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[WebHarness]:
    settings = WebConfig(listen=("127.0.0.1:0",), plain_http=True, session_idle="1h", session_lifetime="1d")
    h = WebHarness(tmp_path / "store", settings=settings)
    h.root.mkdir()
    assert h.accounts is not None
    h.accounts.add("alice", PASSWORD)
    h.accounts.add("bob", PASSWORD + "!")
    h.start()
    yield h
    h.stop()


def test_users_file_is_private_argon2id_and_written_atomically(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "web", hasher=FAST_HASHER)
    accounts.add("alice", PASSWORD)
    st = os.stat(accounts.path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "web").st_mode) == 0o700
    text = accounts.path.read_text()
    assert PASSWORD not in text
    assert json.loads(text)["users"]["alice"]["hash"].startswith("$argon2id$")
    assert accounts.verify("alice", PASSWORD) is not None
    assert accounts.verify("alice", PASSWORD + "x") is None
    assert accounts.verify("nobody", PASSWORD) is None
    assert [p.name for p in (tmp_path / "web").iterdir()] == ["users.json"]  # no temporary file left
    # The production hasher is argon2id too (argon2-cffi's RFC 9106 profile).
    default = Accounts(tmp_path / "web2")
    default.add("carol", PASSWORD)
    assert json.loads(default.path.read_text())["users"]["carol"]["hash"].startswith("$argon2id$v=19$m=65536")


def test_users_file_is_never_read_or_written_through_a_link(tmp_path: Path) -> None:
    state = tmp_path / "web"
    state.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_text("precious\n")
    (state / "users.json").symlink_to(target)
    with pytest.raises(StorageError, match="symbolic link"):
        Accounts(state, hasher=FAST_HASHER)
    (state / "users.json").unlink()
    accounts = Accounts(state, hasher=FAST_HASHER)
    (state / "users.json").symlink_to(target)
    accounts._seen = None  # as if the link appeared after the last read
    with pytest.raises(StorageError, match="symbolic link"):
        accounts.add("alice", PASSWORD)
    assert target.read_text() == "precious\n"
    # A state directory that is a link is refused as well.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="not a directory"):
        Accounts(tmp_path / "linked", hasher=FAST_HASHER).add("alice", PASSWORD)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_account_errors_are_usage_errors(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "web", hasher=FAST_HASHER)
    with pytest.raises(UsageError, match="too short"):
        accounts.add("alice", "short")
    with pytest.raises(UsageError, match="invalid user name"):
        accounts.add("../etc", PASSWORD)
    accounts.add("alice", PASSWORD)
    with pytest.raises(UsageError, match="already exists"):
        accounts.add("alice", PASSWORD)
    with pytest.raises(UsageError, match="no such user"):
        accounts.remove("bob")
    with pytest.raises(UsageError, match="no such user"):
        accounts.set_password("bob", PASSWORD)
    (tmp_path / "web" / "users.json").write_text("{not json")
    with pytest.raises(StorageError, match="not a camrec users file"):
        Accounts(tmp_path / "web", hasher=FAST_HASHER)


def test_sessions_expire_when_idle(harness: WebHarness) -> None:
    sid, _ = harness.login()
    harness.clock.advance(HOUR - 1)
    assert harness.request("GET", "/api/session", session=sid).status == 200  # use resets the idle time
    harness.clock.advance(HOUR - 1)
    assert harness.request("GET", "/api/session", session=sid).status == 200
    harness.clock.advance(HOUR + 1)
    assert harness.request("GET", "/api/session", session=sid).status == 401
    assert harness.request("GET", "/", session=sid).status == 302


def test_sessions_end_after_their_lifetime_however_busy(harness: WebHarness) -> None:
    sid, _ = harness.login()
    for _ in range(47):  # every half hour for 23.5 hours
        harness.clock.advance(HOUR / 2)
        assert harness.request("GET", "/api/session", session=sid).status == 200
    harness.clock.advance(HOUR / 2 + 1)
    assert harness.request("GET", "/api/session", session=sid).status == 401


def test_logout_ends_the_session(harness: WebHarness) -> None:
    sid, csrf = harness.login()
    assert harness.request("POST", "/api/logout", session=sid, csrf=csrf).status == 200
    assert harness.audited[-1]["event"] == "web-logout" and harness.audited[-1]["user"] == "alice"
    assert harness.request("GET", "/api/session", session=sid).status == 401
    assert harness.ctx.sessions is not None and harness.ctx.sessions.count() == 0


@pytest.mark.parametrize("change", ["passwd", "remove"])
def test_a_new_password_or_removal_ends_that_users_sessions(harness: WebHarness, change: str) -> None:
    alice1, _ = harness.login("alice")
    alice2, _ = harness.login("alice")
    bob, _ = harness.login("bob", PASSWORD + "!")
    # What `camrec user passwd|remove` does, in its own process: another Accounts on the same file.
    other = Accounts(harness.state_dir, hasher=FAST_HASHER)
    if change == "passwd":
        other.set_password("alice", "a brand new password")
    else:
        other.remove("alice")
    for sid in (alice1, alice2):
        assert harness.request("GET", "/api/session", session=sid).status == 401
    assert harness.request("GET", "/api/session", session=bob).status == 200
    if change == "passwd":
        assert harness.request("POST", "/api/login", {"username": "alice", "password": PASSWORD}).status == 401
        harness.login("alice", "a brand new password")
    else:
        assert harness.request("POST", "/api/login", {"username": "alice", "password": PASSWORD}).status == 401


def test_the_sessions_file_holds_no_session_id_and_survives_a_restart(harness: WebHarness) -> None:
    sid, csrf = harness.login()
    path = harness.state_dir / "sessions.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert sid not in text
    assert hash_id(sid) in json.loads(text)["sessions"]
    # A copy of the file opens nothing: its keys are not ids.
    for key in json.loads(text)["sessions"]:
        assert harness.request("GET", "/api/session", session=key).status == 401
    # A restart of the recorder: a new server on the same state directory knows the session.
    harness.stop()
    harness.start()
    info = harness.request("GET", "/api/session", session=sid)
    assert info.status == 200 and info.json() == {"user": "alice", "csrf": csrf}
    # ... and its expiry: the idle time ran on while the recorder was down.
    harness.stop()
    harness.clock.advance(HOUR + 61)
    harness.start()
    assert harness.request("GET", "/api/session", session=sid).status == 401


def test_a_damaged_sessions_file_logs_everyone_out_without_failing(harness: WebHarness) -> None:
    sid, _ = harness.login()
    harness.stop()
    (harness.state_dir / "sessions.json").write_text('{"sessions": {"x": 1}}')
    harness.start()
    assert harness.request("GET", "/api/session", session=sid).status == 401
    harness.login()  # and new logins work


def test_an_unreadable_users_file_is_a_503_not_a_500(harness: WebHarness, tmp_path: Path) -> None:
    sid, _ = harness.login()
    users = harness.state_dir / "users.json"
    (tmp_path / "elsewhere.json").write_bytes(users.read_bytes())
    users.unlink()
    users.symlink_to(tmp_path / "elsewhere.json")  # never read through a link
    for a in (harness.request("GET", "/api/session", session=sid),
              harness.request("POST", "/api/login", {"username": "alice", "password": PASSWORD})):
        assert a.status == 503 and "users file" in a.json()["error"]
