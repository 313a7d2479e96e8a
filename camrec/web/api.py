"""The JSON API under /api/ (issue 11, item 7): cameras, events and clip ciphertext.

Placeholder: the routes are added by the "api" part of issue 11. make_app calls add_routes after
its own routes, so every route added here is behind the session and CSRF middlewares.
"""

from __future__ import annotations

from aiohttp import web

from camrec.web.context import WebContext


def add_routes(app: web.Application, ctx: WebContext) -> None:
    pass
