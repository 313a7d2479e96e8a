"""STAND-IN, replaced by the server helper's app.py (login, sessions, CSRF, headers, static pages).

It exists only so that the API and `camrec web serve --store` can run and be tested before the
merge: `make_app(ctx)` is an aiohttp application whose one middleware sets `request["user"]` to
"local" when there are no accounts (`web serve --store`), and which carries the API routes. With
accounts configured it refuses everything (401): this stand-in has no login.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from camrec.web import api
from camrec.web.context import WebContext

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(ctx: WebContext) -> web.Application:
    @web.middleware
    async def local_user(request: web.Request, handler: Handler) -> web.StreamResponse:
        if ctx.accounts is not None:
            return web.json_response({"error": "login needed (this stand-in has no login)"}, status=401)
        request["user"] = "local"
        return await handler(request)

    app = web.Application(middlewares=[local_user])
    api.add_routes(app, ctx)
    return app
