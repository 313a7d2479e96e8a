"""The owner's web app (issue 11): an aiohttp server that hands out age ciphertext and plaintext
index metadata, never plaintext footage; the owner's browser decrypts.

Layer "web" (docs/design.md §1.1): may import the foundation (camrec.errors, redact, printable,
timeparse, clock) and the packages camrec.config, camrec.store and camrec.sources; never
camrec.service, camrec.owner, camrec.record, camrec.motion or camrec.commands. What needs those
(the audit log writer, the daemon's status) is handed in through `context.WebContext`.
"""
