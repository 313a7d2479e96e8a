"""The owner's web app (issue 11, docs/web.md): an aiohttp server on its own asyncio loop thread,
its accounts, sessions, login throttling and TLS certificate, the JSON API and the static pages.

The server hands out ciphertext and plaintext index metadata only: it never decrypts and never sees
an identity. It may import the foundation modules (camrec.errors, redact, printable, timeparse,
clock) and the packages camrec.config, camrec.store and camrec.sources; never camrec.service,
owner, record, motion or commands. camrec.service.daemon starts it inside `camrec run`.
"""
