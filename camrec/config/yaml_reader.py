"""Reading the config YAML into plain data plus a map {key path: line}, with ${env:…} substitution.

The YAML is *composed* (not loaded) and the node tree walked here, so that every value keeps the line
it came from: config.py maps pydantic's error locations back to `file:line` through that map. Secrets
substituted from the environment or systemd credentials are registered with camrec.redact as soon
as they are read, before anything can log or raise them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from camrec.errors import ConfigError
from camrec.redact import redact, register_secret, register_url_credentials, userinfo_readings

# Aliases let a tiny file expand exponentially ("billion laughs"); no real config comes close.
MAX_NODES = 100_000
MAX_DEPTH = 32
IDENTITY_MESSAGE = "contains an age identity (private key); the recorder must only hold public keys"
IDENTITY_HINT = "put the owner's public key (age1…) in 'recipients' and keep the identity off this device"
# --- YAML → plain data + line map -----------------------------------------------------------

KeyPath = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_SUBSTITUTION = re.compile(r"\$(?P<escape>\$?)\{(?P<body>[^}]*)(?P<close>\}?)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CRED_NAME = re.compile(r"[A-Za-z0-9_.@-]+")


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def where(label: str, line: int | None, path: KeyPath) -> str:
    prefix = f"{label}:{line}" if line else label
    return f"{prefix}: {dotted(path)}" if path else prefix


def kind_of(value: Any) -> str:
    # Describe a value by its kind only: the value itself may be a secret.
    kinds: tuple[tuple[Any, str], ...] = (
        (type(None), "nothing (an empty value)"),
        (bool, "true/false"),
        (int | float, "a number"),
        (str, "a string"),
        (list | tuple, "a list"),
        (dict, "a mapping"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


class YamlBuilder:
    """Turns a composed YAML node tree into plain data, recording the line of every key path."""

    def __init__(self, label: str, environ: Mapping[str, str], *, secrets: bool = True) -> None:
        self.label = label
        self.environ = environ
        # False for the owner's read-only commands (list, export, verify, audit, status, doctor
        # --skip cameras): they never use camera secrets, so a reference that can't be resolved
        # here (an owner's shell has no camera passwords) stays as written instead of failing.
        self.secrets = secrets
        self.lines: dict[KeyPath, int] = {}
        self.nodes = 0
        self.active: set[int] = set()  # ids of the nodes being built, to catch recursive aliases
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, path: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(redact(f"{where(self.label, node.start_mark.line + 1, path)}: {message}"), hint)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(node, path, f"more than {MAX_NODES} values (runaway YAML aliases?)")
        if len(path) > MAX_DEPTH:
            raise self.error(node, path[:3], "nested too deeply")
        if id(node) in self.active:
            raise self.error(node, path, "a YAML alias refers to the value that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*path, index)))
                return items
            return self.scalar(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        # Merge keys ("<<: *defaults") first, so explicit keys win both the value and the line.
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.error(source, path, "'<<' merges only mappings (e.g. <<: *defaults)")
                for key, value in self.build(source, path).items():
                    merged.setdefault(key, value)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, path, "keys must be plain names, not lists or mappings")
            # The raw text, not the resolved value: camera "1" stays "1", key "on" stays "on".
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise self.error(key_node, (*path, key), f"duplicate key (first set on line {first_line[key]})")
            first_line[key] = line
            self.lines[(*path, key)] = line
            explicit[key] = self.build(value_node, (*path, key))
        return {**merged, **explicit}

    def scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot read this value"
            raise self.error(node, path, f"invalid value: {problem}") from None
        if isinstance(value, str) and node.tag == _STR_TAG:
            try:
                value = self.substitute(node, path, value)
            except ConfigError:
                # A literal password holding "${" fails substitution; the raw text is then the
                # URL the user wrote, and its password must be known before anything logs it.
                register_url_credentials(value)
                raise
            register_url_credentials(value)
        return value

    def substitute(self, node: yaml.Node, path: KeyPath, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            body = match.group("body")
            if match.group("escape"):
                return match.group(0)[1:]  # "$${…}" is a literal "${…}"
            if not match.group("close"):
                raise self.error(node, path, "unterminated '${' (missing '}')", hint="write ${env:NAME}")
            kind, _, name = body.partition(":")
            if kind == "env" and _ENV_NAME.fullmatch(name):
                value = self.environ.get(name)
                if value is None and not self.secrets:
                    return match.group(0)
                if value is None:
                    raise self.error(
                        node,
                        path,
                        f"environment variable {name} is not set",
                        hint=f"set {name} in the daemon's environment (systemd: Environment=)",
                    )
            elif kind == "cred" and _CRED_NAME.fullmatch(name):
                if not self.secrets:
                    return match.group(0)  # credentials are the service's alone
                value = self.credential(node, path, name)
            else:
                # A literal password may hold "${": then the body is a piece of it, shown only if
                # it reads like a mistyped reference (${PW}, ${env:pw-x}), never a random fragment.
                shown = f"'${{{body}}}'"
                if _in_url_password(text, match.start()) and not _REFERENCE_LIKE.fullmatch(body):
                    shown = "in the password of a URL"
                raise self.error(
                    node,
                    path,
                    f"unsupported substitution {shown}",
                    hint="write ${env:NAME} for an environment variable, ${cred:NAME} for a systemd "
                    "credential, or $${…} for a literal '${'",
                )
            register_secret(value)
            if contains_identity(value):
                raise self.error(node, path, f"the value of ${{{body}}} {IDENTITY_MESSAGE}", hint=IDENTITY_HINT)
            return value

        if "$" not in text:
            return text
        return _SUBSTITUTION.sub(replace, text)

    def credential(self, node: yaml.Node, path: KeyPath, name: str) -> str:
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise self.error(
                node,
                path,
                f"${{cred:{name}}} needs systemd credentials, but CREDENTIALS_DIRECTORY is not set",
                hint="add LoadCredential= or SetCredentialEncrypted= to the camrec unit, or use ${env:NAME}",
            )
        try:
            return (Path(directory) / name).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise self.error(node, path, f"cannot read credential {name!r}: {exc}") from None


_REFERENCE_LIKE = re.compile(r"(?i:env|cred)(?::[A-Za-z0-9_.@-]*)?|[A-Z_][A-Z0-9_]*")


def _in_url_password(text: str, position: int) -> bool:
    """Whether ``position`` lies in the password of ``text`` read as a URL (redact's raw reading)."""
    for userinfo in userinfo_readings(text):
        start = text.find(userinfo)
        colon = userinfo.find(":")
        if start >= 0 and colon >= 0 and start + colon < position < start + len(userinfo):
            return True
    return False


def contains_identity(text: str) -> bool:
    from camrec.crypto.keys import contains_secret_key  # lazily: crypto is not needed to read YAML

    return bool(contains_secret_key(text))
