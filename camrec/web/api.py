"""The JSON API under /api/ that the pages use (docs/web-api.md): cameras, events, and the age
ciphertext of each clip's video, thumbnail and details, byte for byte as stored.

The server never decrypts. Everything read from the store is hostile input: event ids are parsed
to exactly a clip stem (camrec/web/parsers.py), index rows are checked (camrec/store/untrusted.py),
and clip files are opened component by component from the store root with O_NOFOLLOW, then sent
from that very descriptor. Every ciphertext handed out is audited before its first byte leaves.
Errors are JSON `{"error": …}` with a 4xx (or 503 when the store itself can't be read), and a log
line; a traceback never reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from camrec.errors import CamrecError
from camrec.printable import escape_controls
from camrec.store import layout, untrusted
from camrec.store.index import ClipRow
from camrec.store.listing import clip_json
from camrec.web import rows as index_rows
from camrec.web.context import WebContext
from camrec.web.live import routes as live_routes
from camrec.web.parsers import ApiError, EventId, event_id_of, parse_event_id, parse_event_query, parse_range

log = logging.getLogger("camrec.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# One audit entry per (user, client address, file) per this many seconds: a player fetches a clip
# in many Range requests, and each entry is an fsynced append. The first request of a window is
# always logged before any byte of it is sent.
AUDIT_WINDOW = 60.0
FILE_KINDS = {"video": layout.VIDEO_SUFFIX, "thumbnail": layout.THUMB_SUFFIX, "details": layout.META_SUFFIX}
_FILE_SIZE = web.RequestKey("camrec_file_size", int)  # for a 416's Content-Range
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def add_routes(app: web.Application, ctx: WebContext) -> None:
    api = _Api(ctx)
    app.router.add_get("/api/cameras", _guarded(api.cameras))
    app.router.add_get("/api/events", _guarded(api.events))
    app.router.add_get("/api/events/{id}", _guarded(api.event))
    live_routes.add_routes(app, ctx, _guarded)
    for kind in FILE_KINDS:
        app.router.add_get(f"/api/clips/{{id}}/{kind}", api.clip_file(kind))
    # Unknown /api/ paths and methods get JSON like every other API answer (aiohttp's own are text).
    app.middlewares.append(_json_errors)
    app.on_cleanup.append(api.cleanup)


def json_error(request: web.Request, error: ApiError) -> web.Response:
    log.warning("web: %s %s from %s (%s): %d %s", request.method, escape_controls(request.raw_path[:200]),
                request.remote, escape_controls(str(request.get("user", "-"))), error.status,
                escape_controls(error.message))
    headers = dict(_NO_STORE)
    if error.status == 416 and _FILE_SIZE in request:
        headers["Content-Range"] = f"bytes */{request[_FILE_SIZE]}"
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return json_error(request, ApiError(exc.status, "no such API route" if exc.status == 404 else exc.reason))


def _guarded(fn: Handler) -> Handler:
    """ApiError → its JSON answer; a store that can't be read → 503; a bug → 500 JSON with the
    traceback in the log only."""
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ApiError as exc:
            return json_error(request, exc)
        except CamrecError as exc:
            return json_error(request, ApiError(503, f"the store cannot be read: {exc.message}", exc.hint))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("web: internal error on %s %s", request.method, escape_controls(request.raw_path[:200]))
            return web.json_response({"error": "internal error (see the server's log)"}, status=500,
                                     headers=_NO_STORE)
    return wrapper


@dataclass
class _Opened:
    fd: int
    rel: str
    row: ClipRow


class _Api:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.reader = index_rows.IndexReader(ctx.store_root, ctx.read_only_store)
        self._audited: dict[tuple[str, str, str], float] = {}
        self._audit_lock = asyncio.Lock()

    async def cleanup(self, _app: web.Application) -> None:
        self.reader.close()

    # --- /api/events ---------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        query = parse_event_query(parse_qs(request.query_string, keep_blank_values=True),
                                  len(request.query_string))
        found = await asyncio.to_thread(index_rows.query, self.reader, camera=query.camera,
                                        since=query.since, until=query.until)
        # More than `limit`: the newest ones (still oldest first); page back with until=.
        body = [self._event(row) for row in found[-query.limit:]]
        headers = dict(_NO_STORE)
        if len(found) > query.limit:
            headers["X-Camrec-Omitted"] = str(len(found) - query.limit)
        return web.json_response(body, headers=headers)

    async def event(self, request: web.Request) -> web.StreamResponse:
        """One event by id (a bookmarked event page needs no day's list to find it)."""
        row = await asyncio.to_thread(self._find, parse_event_id(request.match_info["id"]))
        return web.json_response(self._event(row), headers=_NO_STORE)

    @staticmethod
    def _event(row: ClipRow) -> dict[str, Any]:
        return {**clip_json(row), "id": event_id_of(row.path), "has_thumbnail": row.thumb is not None,
                "has_details": row.meta is not None}

    # --- /api/cameras --------------------------------------------------------------------------

    async def cameras(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(self._cameras), headers=_NO_STORE)

    def _cameras(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = {}
        if self.ctx.status is not None:
            try:
                doc = self.ctx.status() or {}
            except Exception as exc:  # the daemon's status is a convenience: the events still list
                log.warning("web: the recorder's status is unavailable: %s", exc)
        if not isinstance(doc.get("cameras"), dict):
            # `web serve --store` (or no status yet): the cameras the index knows, in one pass.
            latest: dict[str, ClipRow] = {}
            pictured: dict[str, ClipRow] = {}
            for row in index_rows.query(self.reader):
                latest[row.camera] = row  # oldest first: the last one wins
                if row.thumb:
                    pictured[row.camera] = row
            if self.ctx.status is None and not index_rows.recorder_running(self.ctx.store_root):
                state = "offline"  # a copy, or a disk no recorder holds
            else:
                state = "unknown"
            return [self._camera(name, state, latest[name], pictured.get(name)) for name in sorted(latest)]
        out = []
        for name, cam in sorted(doc["cameras"].items()):
            recent = index_rows.query(self.reader, camera=name, since=time.time() - 86400)
            recent = recent or index_rows.query(self.reader, camera=name)
            status = cam if isinstance(cam, dict) else {}
            with_thumb = next((r for r in reversed(recent) if r.thumb), None)
            out.append(self._camera(name, camera_state(doc, status), recent[-1] if recent else None, with_thumb))
        return out

    @staticmethod
    def _camera(name: str, state: str, row: ClipRow | None, pictured: ClipRow | None) -> dict[str, Any]:
        # The event being recorded has no thumbnail yet (it is written when the clip closes): the
        # camera's picture is the newest event that has one.
        return {"name": name, "state": state, "latest_event": event_id_of(row.path) if row else None,
                "latest_start": clip_json(row)["start"] if row else None,
                "has_thumbnail": bool(row and row.thumb),
                "thumbnail_event": event_id_of(pictured.path) if pictured else None}

    # --- /api/clips/{id}/video|thumbnail|details ----------------------------------------------

    def clip_file(self, kind: str) -> Handler:
        @_guarded
        async def handler(request: web.Request) -> web.StreamResponse:
            event = parse_event_id(request.match_info["id"])
            opened = await _in_thread_closing_if_cancelled(self._open, event, kind)
            try:
                return await self._send(request, opened, kind)
            finally:
                os.close(opened.fd)
        return handler

    def _find(self, event: EventId) -> ClipRow:
        """The index row the id names, or 404."""
        index = self.reader.open()
        try:
            # Clips overlapping the millisecond the id names (names truncate the start to whole
            # milliseconds; the row keeps the exact time), then exactly its path (a row whose times
            # disagree with its name is not found: the index was altered).
            candidates = index.query(camera=event.camera, since=event.start, until=event.start + 0.001)
        finally:
            index.close()
        matches = [r for r in candidates if r.path == event.video and r.state != "garbage"]
        good = index_rows.usable(matches, self.ctx.store_root)
        if not good:
            raise ApiError(404, "no such event")
        return good[0]

    def _open(self, event: EventId, kind: str) -> _Opened:
        """The clip file's descriptor, reached from the store root without following links."""
        row = self._find(event)
        rel = {"video": row.path, "thumbnail": row.thumb, "details": row.meta}[kind]
        if rel is None:
            raise ApiError(404, f"this event has no {kind}")
        if row.state == "missing":
            raise ApiError(404, "the clip file is missing (the index says so)")
        try:
            fd = untrusted.open_file(self.ctx.store_root, rel)
        except untrusted.UnsafeFileError as exc:
            log.warning("web: refused %s: %s", layout.escaped(rel), exc.message)
            raise ApiError(404, "the clip file is not a regular file in the store: not served") from None
        except FileNotFoundError:
            raise ApiError(404, "the clip file is missing (deleted by retention, or never written)") from None
        except OSError as exc:
            raise ApiError(503, f"the clip file cannot be read: {exc.strerror or exc}") from None
        return _Opened(fd, rel, row)

    async def _send(self, request: web.Request, opened: _Opened, kind: str) -> web.StreamResponse:
        st = os.fstat(opened.fd)
        size = st.st_size  # a clip still being written is served up to here
        request[_FILE_SIZE] = size
        etag = f'"{st.st_ino:x}-{size:x}-{st.st_mtime_ns:x}"'
        last_modified = formatdate(st.st_mtime, usegmt=True)
        ranges = request.headers.getall("Range", [])
        if len(ranges) > 1:
            raise ApiError(416, "only one byte range per request is served (several Range headers)")
        header = ranges[0] if ranges else None
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, last_modified):
            header = None  # the file changed since the client's first part: send it whole
        span = parse_range(header, size)
        first, last = span if span is not None else (0, size - 1)
        count = max(0, last - first + 1)
        resp = web.StreamResponse(status=206 if span is not None else 200, headers={
            **_NO_STORE, "Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified,
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{opened.rel.rsplit("/", 1)[-1]}"',
            "X-Camrec-State": opened.row.state})
        if span is not None:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        resp.content_length = count
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp
        await self._audit(request, opened.rel, kind, header if span is not None else None, count, size)
        await resp.prepare(request)
        if count:
            await _sendfile(request, resp, opened.fd, first, count)
        await resp.write_eof()
        return resp

    async def _audit(self, request: web.Request, rel: str, kind: str, span: str | None, count: int,
                     size: int) -> None:
        """Before any byte: one entry per user, client address and file per AUDIT_WINDOW. If the
        entry can't be written, nothing is sent (503)."""
        user, client = str(request.get("user", "?")), str(request.remote)
        key = (user, client, rel)
        async with self._audit_lock:
            now = time.monotonic()
            if key in self._audited and now - self._audited[key] < AUDIT_WINDOW:
                return
            # "files" as in every audit entry (camrec audit lists them); the chain adds the time.
            entry = {"event": "web-fetch", "files": [rel], "file_kind": kind, "user": user, "client": client,
                     "range": span, "bytes": count, "size": size}
            try:
                await asyncio.to_thread(self.ctx.audit, entry)
            except Exception as exc:
                log.error("web: cannot write the audit entry for %s: %s", layout.escaped(rel), exc)
                raise ApiError(503, "the audit log cannot be written: nothing is served without an entry") from None
            if len(self._audited) > 10000:
                self._audited = {k: t for k, t in self._audited.items() if now - t < AUDIT_WINDOW}
            self._audited[key] = now


def camera_state(doc: dict[str, Any], cam: dict[str, Any]) -> str:
    """recording, idle, offline or storage error, from the daemon's status of one camera."""
    if doc.get("storage_error") or cam.get("storage_error") or cam.get("failing"):
        return "storage error"
    state = cam.get("state")
    if state == "recording" or cam.get("recording"):
        return "recording"
    return "idle" if state == "connected" else "offline"


async def _in_thread_closing_if_cancelled(fn: Callable[[EventId, str], _Opened], event: EventId,
                                          kind: str) -> _Opened:
    """fn in a worker thread; if the request is cancelled meanwhile, the descriptor it opens is
    closed when it is done rather than leaked."""
    future = asyncio.get_running_loop().run_in_executor(None, fn, event, kind)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def close(done: asyncio.Future[_Opened]) -> None:
            if not done.cancelled() and done.exception() is None:
                os.close(done.result().fd)
        future.add_done_callback(close)
        raise


async def _sendfile(request: web.Request, resp: web.StreamResponse, fd: int, offset: int, count: int) -> None:
    """`count` bytes from `offset` of the already opened, already checked descriptor: sendfile(2)
    on a plain socket; asyncio's fallback (read + write, in 256 KiB pieces) under TLS. Never by
    path, so nothing can be swapped in after the checks. A client that goes away just ends it."""
    transport = request.transport
    if transport is None:
        return
    loop = asyncio.get_running_loop()
    with os.fdopen(fd, "rb", closefd=False) as fobj:
        try:
            await loop.sendfile(transport, fobj, offset, count)
        except NotImplementedError:  # a transport asyncio can't sendfile on, fallback disabled
            fobj.seek(offset)
            left = count
            while left > 0:
                chunk = await asyncio.to_thread(fobj.read, min(256 * 1024, left))
                if not chunk:
                    break
                await resp.write(chunk)
                left -= len(chunk)
        except (ConnectionError, RuntimeError) as exc:
            with contextlib.suppress(Exception):
                log.info("web: %s ended early: %s", escape_controls(request.path[:200]), exc)
