"""Clip storage: file layout, the SQLite index, the crash-safe clip writer, the signed manifest and
retention (retention planning in retention.py is pure).
May import: the foundation modules and crypto. Never sources, record, service or owner."""
