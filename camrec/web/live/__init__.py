"""Live view (issue 12): the camera's own H.264 to the browser over WebRTC (h264, webrtc) or MSE (fmp4).

Part of layer "web": it may import the foundation modules and camrec.config, camrec.store and
camrec.sources (it subscribes to the per-camera packet hubs); never camrec.service, owner, record,
motion or commands. Nothing here decodes or re-encodes video.
"""
