"""Live view: camera packets to the owner's browser over WebRTC or MSE, without transcoding.

Part of the web layer (camrec.web): it may import the foundation, camrec.config, camrec.store and
camrec.sources (the packet hubs it subscribes to), never the recorder or the service.
"""
