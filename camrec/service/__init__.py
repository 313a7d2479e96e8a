"""The recorder service: the daemon supervisor that wires cameras, hubs, recorders and detectors,
sd_notify and the watchdog, the status file, doctor and the demo.
May import every package below it (config, crypto, store, sources, motion, record); nothing but
commands and cli imports it."""
