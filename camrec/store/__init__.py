"""Clip storage: file layout, the SQLite index, the crash-safe clip writer and retention."""
