"""Recording: the clip policy (pure: pre-roll, post-roll, clip length), the recorder thread that
turns packets and motion into clips, and the fragmented-MP4 muxer.
May import: the foundation modules, sources (packet types), motion (event types), store, crypto."""
