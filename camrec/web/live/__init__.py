"""Live view: the camera's own H.264 to the browser, over WebRTC or as fragmented MP4 for MSE."""
