"""The web API against hostile input, on a real aiohttp server on 127.0.0.1 over a real store.

The store is written by the real Store (age encryption, SQLite index, signed manifest); the
server is the API's own routes behind a stand-in auth middleware (the real one is app.py's). Every
hostile request must get a 4xx JSON answer, never a 500 or a traceback; fetched bytes must be the
file's bytes, and `age -d` must decrypt them with the owner's key.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from camrec.cli import main
from camrec.config.models import WebConfig
from camrec.crypto.keys import identity_file_text
from camrec.store import layout
from camrec.store.lock import RecorderLock
from camrec.web import api
from camrec.web.context import WebContext
from camrec.web.parsers import (
    MAX_QUERY_STRING,
    ApiError,
    EventQuery,
    parse_event_id,
    parse_event_query,
    parse_range,
)
from tests.helpers import have
from tests.test_manifest import T0, make_store, write_clip


@pytest.fixture
def store(tmp_path):
    owner, st_, manifest, rows = make_store(tmp_path, n=3, size=300_000)
    big = write_clip(st_, T0 + 600, 4_000_000, camera="yard")
    manifest.record_row(big)
    manifest.close()
    st_.close()
    key = tmp_path / "owner.txt"
    key.write_text(identity_file_text(owner))
    return {"root": st_.root, "rows": [*rows, big], "owner": owner, "key": key, "tmp": tmp_path}


def stem(rel: str) -> str:
    return rel.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)]


def make_ctx(root: Path, audit: list[dict] | Callable[[dict], None] | None = None, *,
             status: Callable[[], dict] | None = None, read_only: bool = True) -> WebContext:
    sink = audit.append if isinstance(audit, list) else audit or (lambda entry: None)
    return WebContext(store_root=root, read_only_store=read_only, accounts=None, status=status, audit=sink,
                      settings=WebConfig())


def serve(ctx: WebContext, body: Callable[[str], Awaitable[Any]]) -> Any:
    """Runs body(base_url) against a real server on 127.0.0.1 (a free port)."""
    @web.middleware
    async def tester(request: web.Request, handler: Any) -> web.StreamResponse:
        request["user"] = "tester"  # stands in for app.py's session middleware
        return await handler(request)

    async def run() -> Any:
        app = web.Application(middlewares=[tester])
        api.add_routes(app, ctx)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            return await body(f"http://127.0.0.1:{runner.addresses[0][1]}")
        finally:
            await runner.cleanup()

    return asyncio.run(run())


async def get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as s, s.get(base + path, headers=headers or {}) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


async def raw(base: str, target: bytes, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these bytes as its target (no client-side normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(status: int, headers: dict, body: bytes, expected: int | tuple[int, ...]) -> dict:
    assert status == expected if isinstance(expected, int) else status in expected, (status, body[:200])
    content_type = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    doc = json.loads(body)
    assert isinstance(doc["error"], str) and doc["error"]
    assert b"Traceback" not in body
    return doc


# --- events and cameras ------------------------------------------------------------------------

def test_events_have_the_fields_of_list_json_plus_id(store, capsys):
    root = store["root"]
    assert main(["list", "--store", str(root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)

    async def body(base):
        return await get(base, "/api/events")

    status, headers, data = serve(make_ctx(root), body)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    events = json.loads(data)
    assert [{k: v for k, v in e.items() if k not in ("id", "has_thumbnail", "has_details")} for e in events] == listed
    assert [e["id"] for e in events] == [stem(r.path) for r in store["rows"]]
    assert all(e["has_thumbnail"] and e["has_details"] for e in events)
    assert [e["start"] for e in events] == sorted(e["start"] for e in events)


def test_one_event_by_id_is_the_lists_entry_and_bad_ids_get_404(store, caplog):
    root, rows = store["root"], store["rows"]
    s = stem(rows[1].path)
    bad = [b"/api/events/cam-20991121T000000.000Z",  # well formed, not in the index
           b"/api/events/cam-20251321T000000.000Z",  # month 13
           b"/api/events/" + s.encode() + b"%0A",
           b"/api/events/..%2F..%2Findex.sqlite3",
           b"/api/events/%2e%2e%2f" + s.encode(),
           b"/api/events/" + s.encode() + b".mp4.age",
           b"/api/events/" + b"a" * 5000,
           b"/api/events/cam%2F2025-11-21%2F" + s.encode()]

    async def body(base):
        listed = json.loads((await get(base, "/api/events"))[2])
        one = [await get(base, f"/api/events/{stem(r.path)}") for r in rows]
        return listed, one, [await raw(base, t) for t in bad]

    listed, one, answers = serve(make_ctx(root), body)
    for entry, (status, headers, data) in zip(listed, one, strict=True):
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert json.loads(data) == entry
    for target, (status, headers, data) in zip(bad, answers, strict=True):
        assert "no such event" in assert_json_error(status, headers, data, 404)["error"], target
    assert sum("no such event" in r.getMessage() for r in caplog.records) >= len(bad)  # each one is logged


def test_events_filters_limit_and_the_clis_messages(store, capsys):
    root = store["root"]
    assert main(["list", "--store", str(root), "--since", "soonish"]) == 2
    cli_message = capsys.readouterr().err.splitlines()[0].removeprefix("camrec: error: ")

    async def body(base):
        return {
            "camera": await get(base, "/api/events?camera=yard"),
            "since": await get(base, "/api/events?since=2025-11-21T04:45Z"),
            "bad_since": await get(base, "/api/events?since=soonish"),
            "reversed": await get(base, "/api/events?since=1d&until=2d"),
            "limit": await get(base, "/api/events?limit=2"),
            "bad_limit": [await get(base, f"/api/events?limit={v}") for v in ("0", "10001", "-1", "x", "1e3")],
            "bad_camera": await get(base, "/api/events?camera=../x"),
            "twice": await get(base, "/api/events?camera=cam&camera=yard"),
        }

    got = serve(make_ctx(root), body)
    assert [e["camera"] for e in json.loads(got["camera"][2])] == ["yard"]
    assert [e["id"] for e in json.loads(got["since"][2])] == [stem(r.path) for r in store["rows"][-1:]]
    assert assert_json_error(*got["bad_since"], 400)["error"] == cli_message
    assert "is after" in assert_json_error(*got["reversed"], 400)["error"]
    status, headers, data = got["limit"]
    assert status == 200 and headers["X-Camrec-Omitted"] == "2"
    assert [e["id"] for e in json.loads(data)] == [stem(r.path) for r in store["rows"][-2:]]
    for answer in got["bad_limit"]:
        assert_json_error(*answer, 400)
    assert_json_error(*got["bad_camera"], 400)
    assert_json_error(*got["twice"], 400)


def test_cameras_in_serve_mode_and_from_the_daemons_status(store):
    root = store["root"]

    async def body(base):
        return json.loads((await get(base, "/api/cameras"))[2])

    offline = serve(make_ctx(root), body)
    assert offline == [
        {"name": "cam", "state": "offline", "latest_event": stem(store["rows"][2].path),
         "latest_start": offline[0]["latest_start"], "has_thumbnail": True,
         "thumbnail_event": stem(store["rows"][2].path)},
        {"name": "yard", "state": "offline", "latest_event": stem(store["rows"][3].path),
         "latest_start": offline[1]["latest_start"], "has_thumbnail": True,
         "thumbnail_event": stem(store["rows"][3].path)}]

    doc = {"storage_error": None, "cameras": {
        "cam": {"state": "connected", "recording": False},
        "yard": {"state": "recording", "recording": True},
        "porch": {"state": "disconnected", "recording": False}}}
    live = serve(make_ctx(root, status=lambda: doc, read_only=False), body)
    assert [(c["name"], c["state"], c["latest_event"]) for c in live] == [
        ("cam", "idle", stem(store["rows"][2].path)), ("porch", "offline", None),
        ("yard", "recording", stem(store["rows"][3].path))]
    doc["storage_error"] = "disk full"
    assert {c["state"] for c in serve(make_ctx(root, status=lambda: doc, read_only=False), body)} == {"storage error"}


# --- ciphertext --------------------------------------------------------------------------------

@pytest.mark.skipif(not have("age"), reason="needs the age binary")
def test_fetched_bytes_are_the_files_and_age_decrypts_them(store):
    root, row = store["root"], store["rows"][0]
    audit: list[dict] = []

    async def body(base):
        return {kind: await get(base, f"/api/clips/{stem(row.path)}/{kind}") for kind in api.FILE_KINDS}

    got = serve(make_ctx(root, audit), body)
    for kind, rel in (("video", row.path), ("thumbnail", row.thumb), ("details", row.meta)):
        status, headers, data = got[kind]
        assert status == 200 and headers["Accept-Ranges"] == "bytes"
        assert int(headers["Content-Length"]) == len(data)
        assert data == (root / rel).read_bytes()
        out = subprocess.run(["age", "-d", "-i", str(store["key"])], input=data, capture_output=True, check=True)
        if kind == "details":
            assert json.loads(out.stdout) == {"camera": "cam"}
        elif kind == "thumbnail":
            assert out.stdout.startswith(b"\xff\xd8\xff")
        else:
            assert len(out.stdout) == 300_000
    assert [(e["event"], e["files"][0], e["file_kind"], e["user"], e["client"]) for e in audit] == [
        ("web-fetch", row.path, "video", "tester", "127.0.0.1"),
        ("web-fetch", row.thumb, "thumbnail", "tester", "127.0.0.1"),
        ("web-fetch", row.meta, "details", "tester", "127.0.0.1")]


def test_a_clip_whose_start_has_sub_millisecond_digits_is_found(tmp_path):
    """A recorder's clips start at any float time; the id (the file name) keeps whole
    milliseconds. The lookup must find the row anyway (every live recording has such starts)."""
    _, st_, manifest, _ = make_store(tmp_path, n=0)
    row = write_clip(st_, T0 + 0.3418221, 50_000)
    manifest.close()
    st_.close()

    async def body(base):
        return {kind: await get(base, f"/api/clips/{stem(row.path)}/{kind}") for kind in api.FILE_KINDS}

    got = serve(make_ctx(st_.root), body)
    assert stem(row.path).endswith(".341Z")
    for kind, rel in (("video", row.path), ("thumbnail", row.thumb), ("details", row.meta)):
        status, _, data = got[kind]
        assert status == 200 and data == (st_.root / rel).read_bytes(), (kind, status)


def test_single_ranges_and_the_range_policy(store):
    root, row = store["root"], store["rows"][0]
    data = (root / row.path).read_bytes()
    size = len(data)
    url = f"/api/clips/{stem(row.path)}/video"
    audit: list[dict] = []

    async def body(base):
        async def ranged(value, **more):
            return await get(base, url, {"Range": value, **more})
        etag = (await get(base, url))[1]["ETag"]
        return {
            "ok": [await ranged(v) for v in ("bytes=0-99", "bytes=100-", "bytes=-50", f"bytes=10-{size * 2}",
                                             f"bytes={size - 1}-")],
            "416": [await ranged(v) for v in (f"bytes={size}-", "bytes=-0", "bytes=5-1", "bytes=0-1,5-9",
                                              "bytes=0-50,10-60", "bytes=abc", "bytes=-", "bytes=1-2-3",
                                              "bytes=" + "9" * 30 + "-", "bytes 0-1", "bytes=0-1" + ",2-3" * 60)],
            "unit": await ranged("items=0-1"),
            "if_range_ok": await ranged("bytes=0-9", **{"If-Range": etag}),
            "if_range_stale": await ranged("bytes=0-9", **{"If-Range": '"stale"'}),
        }

    got = serve(make_ctx(root, audit), body)
    expected = [(0, 99), (100, size - 1), (size - 50, size - 1), (10, size - 1), (size - 1, size - 1)]
    for (status, headers, part), (first, last) in zip(got["ok"], expected, strict=True):
        assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert part == data[first:last + 1]
    for status, headers, part in got["416"]:
        assert_json_error(status, headers, part, 416)
    assert got["416"][0][1]["Content-Range"] == f"bytes */{size}"
    assert got["unit"][0] == 200 and got["unit"][2] == data
    assert got["if_range_ok"][0] == 206 and got["if_range_ok"][2] == data[:10]
    assert got["if_range_stale"][0] == 200 and got["if_range_stale"][2] == data
    # Many requests for one file by one user from one address within a minute: one audit entry.
    assert [e["files"][0] for e in audit] == [row.path]


def test_a_recording_clip_is_served_as_far_as_it_is_written(store):
    root = store["root"]
    from camrec.store.writer import Store

    st_ = Store(root, [store["owner"].recipient()])
    clip = st_.open_clip("cam", T0 + 900)
    clip.write(os.urandom(200_000), T0 + 905)
    lock = RecorderLock(root)
    try:
        async def body(base):
            events = json.loads((await get(base, "/api/events?camera=cam"))[2])
            return events, await get(base, f"/api/clips/{events[-1]['id']}/video")

        events, (status, headers, data) = serve(make_ctx(root), body)
        assert events[-1]["state"] == "partial"  # no recorder holds the store: a cut clip
        lock.acquire()
        events, (status, headers, data) = serve(make_ctx(root, read_only=False), body)
        assert events[-1]["state"] == "recording" and headers["X-Camrec-State"] == "recording"
        on_disk = (root / events[-1]["path"]).read_bytes()
        assert status == 200 and 0 < len(data) <= len(on_disk) and data == on_disk[:len(data)]
    finally:
        lock.release()
        clip.close(T0 + 910)
        st_.close()


def test_a_clip_deleted_while_it_downloads_completes(store):
    root, row = store["root"], store["rows"][3]
    data = (root / row.path).read_bytes()

    async def body(base):
        async with aiohttp.ClientSession() as s, s.get(f"{base}/api/clips/{stem(row.path)}/video") as r:
            first = await r.content.readexactly(65536)
            (root / row.path).unlink()  # what retention does
            rest = await r.content.read()
        gone = await get(base, f"/api/clips/{stem(row.path)}/video")
        return r.status, first + rest, gone

    status, got, gone = serve(make_ctx(root), body)
    assert status == 200 and got == data
    assert "missing" in assert_json_error(*gone, 404)["error"]


# --- hostile input -----------------------------------------------------------------------------

def test_unknown_and_path_shaped_ids_get_404_json(store, caplog):
    root, row = store["root"], store["rows"][0]
    s = stem(row.path)
    targets = [
        b"/api/clips/cam-20991121T000000.000Z/video",         # well formed, not in the index
        b"/api/clips/cam-20251321T000000.000Z/video",         # month 13
        b"/api/clips/" + s.encode() + b"%0A/video",            # the stem regex's `$` allows a newline
        b"/api/clips/..%2F..%2F..%2Fetc%2Fpasswd/video",
        b"/api/clips/%2e%2e%2f" + s.encode() + b"/video",
        b"/api/clips/" + s.encode() + b"%00/video",
        b"/api/clips/" + s.encode() + b".mp4.age/video",
        b"/api/clips/" + b"a" * 5000 + b"/video",
        b"/api/clips/../../index.sqlite3/video",
        b"/api/clips/" + s.encode() + b"/../../../etc/passwd",
        b"/api/clips/" + s.encode() + b"/manifest",
        b"/api/nothing",
        b"/api/clips/cam/2025-11-21/" + s.encode() + b".mp4.age/video",
    ]

    async def body(base):
        return [await raw(base, t) for t in targets]

    answers = serve(make_ctx(root), body)
    for target, (status, headers, data) in zip(targets, answers, strict=True):
        assert status != 500, target
        assert_json_error(status, headers, data, (404, 405))
    assert any("no such" in r.getMessage() for r in caplog.records)  # each one is logged


def test_symlinks_in_the_store_are_never_followed(store):
    root, rows, tmp = store["root"], store["rows"], store["tmp"]
    outside = tmp / "outside.bin"
    outside.write_bytes(b"SECRET-OUTSIDE-THE-STORE" * 100)
    video = root / rows[0].path
    video.unlink()
    video.symlink_to(outside)  # a clip file that is a link
    day = (root / rows[3].path).parent
    moved = tmp / "moved-day"
    day.rename(moved)
    day.symlink_to(moved)  # a day directory that is a link (to the real files)

    async def body(base):
        return [await get(base, f"/api/clips/{stem(r.path)}/{kind}") for r in (rows[0], rows[3])
                for kind in ("video", "thumbnail")]

    answers = serve(make_ctx(root), body)
    assert answers[1][0] == 200  # rows[0]'s thumbnail is still a regular file
    for status, headers, data in (answers[0], answers[2], answers[3]):
        assert b"SECRET" not in data
        assert "not a regular file" in assert_json_error(status, headers, data, 404)["error"]


def test_index_rows_pointing_outside_the_store(store, caplog):
    root, row = store["root"], store["rows"][0]
    (store["tmp"] / "secret.mp4.age").write_bytes(b"SECRET")
    db = sqlite3.connect(root / layout.INDEX_NAME)
    with db:
        db.execute("UPDATE clips SET thumb = ? WHERE path = ?", ("../secret.mp4.age", row.path))
        db.execute("INSERT INTO clips (camera, start, end, size, path, state) VALUES "
                   "('cam', ?, ?, 1, '../secret.mp4.age', 'complete')", (T0 + 1, T0 + 2))
        db.execute("INSERT INTO clips (camera, start, end, size, path, state) VALUES "
                   "('cam', ?, ?, 1, 'cam/2025-11-21/../../../secret.mp4.age', 'complete')", (T0 + 3, T0 + 4))
    db.close()

    async def body(base):
        return (json.loads((await get(base, "/api/events"))[2]),
                [await get(base, f"/api/clips/{stem(row.path)}/{kind}") for kind in ("video", "thumbnail")])

    events, answers = serve(make_ctx(root), body)
    assert stem(row.path) not in [e["id"] for e in events] and len(events) == 3
    assert all("secret" not in json.dumps(e) for e in events)
    for status, headers, data in answers:
        assert b"SECRET" not in data
        assert_json_error(status, headers, data, 404)
    assert any("skipped" in r.getMessage() for r in caplog.records)


def test_oversized_query_strings_and_wrong_methods(store):
    async def body(base):
        async with aiohttp.ClientSession() as s, s.post(f"{base}/api/events") as r:
            post = (r.status, CIMultiDict(r.headers), await r.read())
        return (await get(base, "/api/events?since=" + "a" * (MAX_QUERY_STRING + 10)),
                await raw(base, b"/api/events?since=" + b"a" * 9000), post)

    long_query, huge, post = serve(make_ctx(store["root"]), body)
    assert_json_error(*long_query, 414)
    assert 400 <= huge[0] < 500  # beyond aiohttp's own request-line limit: its 4xx, never reaching us
    assert_json_error(*post, 405)


def test_nothing_is_served_without_an_audit_entry(store):
    row = store["rows"][0]

    def broken(entry: dict) -> None:
        raise OSError(28, "No space left on device")

    async def body(base):
        return await get(base, f"/api/clips/{stem(row.path)}/video")

    status, headers, data = serve(make_ctx(store["root"], broken), body)
    assert "audit" in assert_json_error(status, headers, data, 503)["error"]


def test_serving_never_writes_into_the_store(store):
    root = store["root"]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    async def body(base):
        await get(base, "/api/events")
        await get(base, "/api/cameras")
        return await get(base, f"/api/clips/{stem(store['rows'][0].path)}/video")

    assert serve(make_ctx(root), body)[0] == 200
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # no -wal/-shm created either


# --- the parsers, driven by hypothesis ---------------------------------------------------------

def _only_value_or_4xx(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return None


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=100), st.from_regex(r"[a-z]{1,5}-2025112[0-9]T[0-9]{6}\.[0-9]{3}Z(-[0-9])?",
                                                      fullmatch=True)))
def test_event_id_parser_returns_a_clip_stem_or_404(text):
    event = _only_value_or_4xx(lambda: parse_event_id(text))
    if event is not None:
        assert event.stem == text and layout.parse_relpath(event.video) is not None
        assert event.video.rsplit("/", 1)[-1] == text + layout.VIDEO_SUFFIX


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300),
                 st.from_regex(r"bytes=[0-9]{0,6}-[0-9]{0,6}(,[0-9]{0,3}-[0-9]{0,3})?", fullmatch=True)),
       st.integers(min_value=0, max_value=10**6))
def test_range_parser_returns_a_span_inside_the_file_or_416(header, size):
    span = _only_value_or_4xx(lambda: parse_range(header, size))
    if span is not None:
        first, last = span
        assert 0 <= first <= last < size


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["camera", "since", "until", "limit", "other"]),
                       st.lists(st.text(max_size=40), min_size=1, max_size=2)),
       st.integers(min_value=0, max_value=5000))
def test_event_query_parser_returns_a_query_or_4xx(params, length):
    query = _only_value_or_4xx(lambda: parse_event_query(params, length))
    if query is not None:
        assert isinstance(query, EventQuery) and 1 <= query.limit <= 10000
        assert query.since is None or query.until is None or query.since <= query.until


def test_ranges_over_tls_are_the_files_bytes(store, tmp_path):
    """The recorder serves HTTPS: asyncio's sendfile falls back to read + write under TLS; the bytes
    and ranges must be the same as on a plain socket."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    row = store["rows"][3]
    data = (store["root"] / row.path).read_bytes()

    async def run():
        app = web.Application()
        api.add_routes(app, make_ctx(store["root"]))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
        base = f"https://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
                url = f"{base}/api/clips/{stem(row.path)}/video"
                async with s.get(url) as r:
                    whole = await r.read()
                async with s.get(url, headers={"Range": "bytes=1000000-2000000"}) as r:
                    part = (r.status, await r.read())
            return whole, part
        finally:
            await runner.cleanup()

    whole, (status, part) = asyncio.run(run())
    assert whole == data
    assert status == 206 and part == data[1000000:2000001]


def test_head_several_range_headers_and_a_client_that_leaves(store, caplog):
    root, row = store["root"], store["rows"][3]
    size = (root / row.path).stat().st_size
    url = f"/api/clips/{stem(row.path)}/video"
    audit: list[dict] = []

    async def body(base):
        async with aiohttp.ClientSession() as s, s.head(base + url) as r:
            head = (r.status, r.headers.get("Content-Length"), await r.read())
        twice = await raw(base, url.encode(), b"Range: bytes=0-1\r\nRange: bytes=5-9\r\n")
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await reader.readexactly(1000)
        writer.transport.abort()  # gone mid-download
        await asyncio.sleep(0.3)
        after = await get(base, url, {"Range": "bytes=0-9"})
        return head, twice, after

    head, twice, after = serve(make_ctx(root, audit), body)
    assert head == (200, str(size), b"")
    assert_json_error(*twice, 416)
    assert after[0] == 206 and after[2] == (root / row.path).read_bytes()[:10]
    assert len(audit) == 1  # HEAD hands out nothing; the two GETs fall in one audit window
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_serve_mode_sees_a_store_that_changes_and_a_status_that_fails(store):
    root = store["root"]
    from camrec.store.writer import Store

    async def body(base):
        first = json.loads((await get(base, "/api/events"))[2])
        st_ = Store(root, [store["owner"].recipient()])
        write_clip(st_, T0 + 1200)
        st_.close()
        return first, json.loads((await get(base, "/api/events"))[2])

    first, second = serve(make_ctx(root), body)
    assert len(second) == len(first) + 1

    def failing() -> dict:
        raise RuntimeError("daemon status not ready")

    async def cameras(base):
        return await get(base, "/api/cameras")

    status, _, data = serve(make_ctx(root, status=failing, read_only=False), cameras)
    assert status == 200
    assert [(c["name"], c["state"]) for c in json.loads(data)] == [("cam", "unknown"), ("yard", "unknown")]
