"""Text from a store, made safe to print on a terminal.

Everything a store holds (index rows, file names, manifest and audit entries) may have been
written by a compromised recorder. Printed raw, an ANSI escape sequence can rewrite the
terminal (hide a line, fake a "0 problem(s)", set the window title), and a bidi override can make
a name read differently from what it is. `escape_controls` is the one function every owner-side
command uses before such text reaches stdout or stderr.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls; the bidi embeddings/overrides (U+202A–U+202E) and isolates
# (U+2066–U+2069); and lone surrogates, which is how Python decodes a file name that is not UTF-8
# (printing one would raise UnicodeEncodeError instead of showing the name).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: object) -> str:
    """`text` as a string with every control, bidi-override and surrogate character written as
    `\\xNN` or `\\uNNNN`, so it prints as one inert line."""
    return _UNSAFE.sub(_escape, str(text))
