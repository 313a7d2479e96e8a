"""camrec: a local-first home camera recorder that writes age-encrypted clips."""

__version__ = "0.1.0"
