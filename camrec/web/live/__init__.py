"""Live view (issue 12): the camera's own H.264 sent to the browser over WebRTC, or as fragmented
MP4 for Media Source Extensions, without decoding or re-encoding.

Part of the web layer: it may import the foundation modules (camrec.errors, redact, printable,
timeparse, clock) and the packages camrec.config, camrec.store and camrec.sources; never
camrec.service, owner, record, motion or commands.
"""
