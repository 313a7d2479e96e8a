"""Configuration: one YAML file, read once at start-up, validated into frozen pydantic models.

Every problem is a ConfigError whose message starts with ``file:line: dotted.key.path:`` so the
user can go straight to the mistake. To get lines, the YAML is *composed* (not loaded): we walk
the node tree ourselves, building plain data and a map {key path tuple: line} at the same time,
then map pydantic's error ``loc`` tuples back to lines (falling back to the nearest parent).

Secrets: ``${env:NAME}`` (and ``${cred:NAME}``, a systemd credential from $CREDENTIALS_DIRECTORY)
may appear inside any string value; every substituted value and every password found in a URL
is registered with camrec.redact before anything can be logged or raised. Error messages never
show an input value that is not redacted. A config holding an age identity is refused outright:
the recorder must only ever hold public keys (DESIGN §5, threat 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from camrec.config.files import read_limited
from camrec.config.models import (
    MAX_CONFIG_BYTES,
    MIXED_HINT,
    MIXED_RECIPIENTS,
    RECIPIENT_HINT,
    Config,
    post_quantum,
    validation_error,
)
from camrec.config.yaml_reader import (
    IDENTITY_HINT,
    IDENTITY_MESSAGE,
    KeyPath,
    YamlBuilder,
    contains_identity,
    kind_of,
    where,
)
from camrec.errors import GROUP_HINT, ConfigError, IdentityError
from camrec.redact import redact

__all__ = ["load_config", "parse_config", "read_recipients_file"]

# --- loading --------------------------------------------------------------------------------


def load_config(path: str | Path, environ: Mapping[str, str] | None = None, *, secrets: bool = True) -> Config:
    """Read and validate the config file at ``path``; raises ConfigError on any problem.

    ``secrets=False`` (the owner's read-only commands) leaves a ``${env:}``/``${cred:}`` reference
    that can't be resolved as written instead of failing: those commands never use camera secrets."""
    file = Path(path)
    label = str(path)
    try:
        # Bounded by the bytes read and regular files only: /dev/zero or a FIFO must not hang us.
        raw = read_limited(file, MAX_CONFIG_BYTES, "config file", label)
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, not a config file", hint="pass the YAML file itself") from None
    except FileNotFoundError:
        raise ConfigError(
            f"{label}: no such file", hint="start from config/camrec.example.yaml, or pass --config PATH"
        ) from None
    except PermissionError:
        raise ConfigError(f"{label}: permission denied", hint=GROUP_HINT) from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{label}:{line}: not UTF-8 text", hint="save the file as UTF-8") from None
    return parse_config(text, file.absolute(), environ=environ, label=label, secrets=secrets)


def parse_config(
    text: str,
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    label: str | None = None,
    secrets: bool = True,
) -> Config:
    """Validate YAML ``text`` as if it were the file ``path`` (relative paths resolve against its
    directory; the current directory when ``path`` is None). For tests and `camrec config check`."""
    source = Path(path).absolute() if path is not None else None
    label = label or (str(path) if path is not None else "<config>")
    base_dir = source.parent if source is not None else Path.cwd()
    environ = os.environ if environ is None else environ

    if contains_identity(text):
        # Checked on the raw text first, before any parsing, so that even a broken file holding a
        # key is refused with the message that matters. The key itself is never echoed.
        line = next((n for n, row in enumerate(text.splitlines(), 1) if contains_identity(row)), None)
        raise ConfigError(f"{where(label, line, ())}: {IDENTITY_MESSAGE}", hint=IDENTITY_HINT)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        hint = None
        if "'\\t'" in what:
            hint = "indent with spaces; YAML does not allow tabs"
        elif "mapping values are not allowed" in what:
            hint = 'quote values that contain ": " or end with ":", e.g. source: "synthetic:"'
        raise ConfigError(redact(f"{where(label, line, ())}: invalid YAML: {what}"), hint) from None
    except yaml.YAMLError as exc:  # a ReaderError: a control character, with a position instead of a mark
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        what = str(exc).splitlines()[0]
        raise ConfigError(redact(f"{where(label, line, ())}: invalid YAML: {what}")) from None
    except RecursionError:
        raise ConfigError(f"{label}: invalid YAML: nested too deeply") from None
    if root is None:
        raise ConfigError(f"{label}: the file is empty", hint="start from config/camrec.example.yaml")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{label}:{root.start_mark.line + 1}: expected settings (key: value lines) at the top level")

    builder = YamlBuilder(label, environ, secrets=secrets)
    data: dict[str, Any] = builder.build(root, ())
    lines = builder.lines
    lines[()] = root.start_mark.line + 1
    # Top-level "x-…" keys are ignored, as in Compose files, so they can hold YAML anchors shared
    # by several cameras ("x-motion: &motion {...}" then "motion: *motion").
    data = {key: value for key, value in data.items() if not key.startswith("x-")}

    if "source_path" in data:  # a model field, but filled in below, never from YAML
        raise ConfigError(f"{where(label, lines[('source_path',)], ('source_path',))}: unknown key")

    _recipients_from_file(data, lines, label, base_dir)
    data["source_path"] = source
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise validation_error(exc, label, lines) from None


def _recipients_from_file(data: dict[str, Any], lines: dict[KeyPath, int], label: str, base_dir: Path) -> None:
    """Replace 'recipients_file: PATH' by the recipients it lists; exactly one of the two keys."""
    if "recipients_file" not in data:
        if "recipients" not in data:
            raise ConfigError(
                f"{where(label, lines[()], ())}: no recipients: the owner's public key is required",
                hint="add 'recipients: [age1…]' (or 'recipients_file: PATH'); make the key pair with "
                "age-keygen on another device",
            )
        return
    setting = where(label, lines[("recipients_file",)], ("recipients_file",))
    if "recipients" in data:
        raise ConfigError(f"{setting}: set either 'recipients' or 'recipients_file', not both")
    entry = data["recipients_file"]
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{setting}: expected a file path, got {kind_of(entry)}")
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else base_dir / path
    data["recipients"] = list(read_recipients_file(path, referenced_from=setting))
    lines[("recipients",)] = lines[("recipients_file",)]  # errors about the list point at the setting
    data["recipients_file"] = path


def read_recipients_file(path: Path, *, referenced_from: str | None = None) -> tuple[str, ...]:
    """Recipients from a file with one age public key per line; blank lines and # comments ignored.

    Errors name ``path:line``; ``referenced_from`` (e.g. "config.yaml:3: recipients_file") is
    added to I/O errors so the user knows which setting pointed there.
    """
    via = f" (from {referenced_from})" if referenced_from else ""
    try:
        text = read_limited(path, MAX_CONFIG_BYTES, "recipients file").decode("utf-8-sig")
    except ConfigError as exc:
        raise ConfigError(f"{exc.message}{via}", exc.hint) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipients file{via}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a recipients file{via}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read recipients file{via}: {exc}") from None
    if contains_identity(text):
        line = next((n for n, row in enumerate(text.splitlines(), 1) if contains_identity(row)), None)
        raise ConfigError(f"{where(str(path), line, ())}: {IDENTITY_MESSAGE}", hint=IDENTITY_HINT)

    from camrec.crypto.keys import parse_recipient

    recipients: list[str] = []
    for number, row in enumerate(text.splitlines(), 1):
        entry = row.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            parse_recipient(entry)
        except IdentityError as exc:
            raise ConfigError(f"{path}:{number}: {exc.message}", hint=exc.hint or RECIPIENT_HINT) from None
        if recipients and post_quantum(entry) != post_quantum(recipients[0]):
            raise ConfigError(f"{path}:{number}: recipients: {MIXED_RECIPIENTS}", hint=MIXED_HINT)
        recipients.append(entry)
    if not recipients:
        raise ConfigError(f"{path}: no recipients in this file{via}", hint=RECIPIENT_HINT)
    return tuple(recipients)
