"""The config models: frozen pydantic models and validators, and pydantic errors turned into ConfigError.

Pure: no file is read here (camrec.config.loading reads the YAML and hands plain data over), so
the models can be validated anywhere, a test or a future web form included.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from camrec.config.yaml_reader import (
    KeyPath,
    kind_of,
    where,
)
from camrec.errors import ConfigError, IdentityError
from camrec.redact import redact, redact_url, register_url_credentials
from camrec.source_spec import (
    EXEC_HELP,
    EXEC_PREFIX,
    PICAMERA_HELP,
    PICAMERA_PREFIX,
    V4L2_HELP,
    parse_picamera,
    parse_v4l2,
    split_exec,
)
from camrec.timeparse import format_duration, parse_duration, parse_size

__all__ = [
    "CameraConfig",
    "Config",
    "LiveConfig",
    "MotionSettings",
    "Polygon",
    "StorageConfig",
    "TlsFiles",
    "WebConfig",
    "WebRtcConfig",
]

CAMERA_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# Config files are a few kilobytes; anything bigger is the wrong file (a clip, a log).
MAX_CONFIG_BYTES = 1024 * 1024


def _fail(reason: str, hint: str | None = None) -> PydanticCustomError:
    # A custom error keeps our wording (pydantic would prefix "Value error, ") and carries the hint.
    context: dict[str, str] = {"reason": redact(reason)}
    if hint:
        context["hint"] = redact(hint)
    return PydanticCustomError("camrec", "{reason}", context)


# --- numbers, durations, sizes -------------------------------------------------------------


def _range_text(lo: float | None, hi: float | None, fmt: Callable[[float], str]) -> str:
    if lo is not None and hi is not None:
        return f"between {fmt(lo)} and {fmt(hi)}"
    return f"at least {fmt(lo)}" if lo is not None else f"at most {fmt(hi or 0)}"


def _number(kind: type[int] | type[float], lo: float, hi: float | None, *, open_: bool = False) -> Any:
    """A before-validator for a number in [lo, hi], or in (lo, hi) when ``open_``."""

    def check(value: Any) -> Any:
        # pydantic's lax mode would take True as 1; "threshold: yes" is a mistake, not a number.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(f"expected a number, got {kind_of(value)}")
        if kind is int and not float(value).is_integer():
            raise _fail(f"expected a whole number, got {value!r}")
        if open_:
            if value <= lo or (hi is not None and value >= hi):
                bound = f"between {lo:g} and {hi:g} (exclusive)" if hi is not None else f"greater than {lo:g}"
                raise _fail(f"must be {bound}, got {value!r}")
        elif value < lo or (hi is not None and value > hi):
            raise _fail(f"must be {_range_text(lo, hi, lambda v: f'{v:g}')}, got {value!r}")
        return kind(value)

    return check


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if not lo <= seconds <= hi:
            raise _fail(f"must be {_range_text(lo, hi, format_duration)}, got {format_duration(seconds)}")
        return seconds

    return check


def _size(lo: int, *, optional: bool = False) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None and optional:
            return None
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if size < lo:
            raise _fail(f"must be at least {lo} bytes, got {size}")
        return size

    return check


def _days(value: Any) -> float:
    if isinstance(value, str):
        raise _fail(f"expected a number of days, got {value!r}", hint="write a plain number, e.g. 30 (days) or 0.5")
    return float(_number(float, 0, None, open_=True)(value))


# --- sources --------------------------------------------------------------------------------

_URL_SCHEMES = ("rtsp", "rtsps")
_DEVICE = re.compile(r"/dev/video\d+|/dev/v4l/by-(?:id|path)/[^/\s]+")
_SOURCE_HELP = ("use rtsp://host:554/path, rtsps://…, synthetic: (the demo camera), /dev/videoN, "
                "picamera: (a Raspberry Pi camera module) or exec:<command writing H.264>")


def _source(value: object) -> str:
    """A camera source: rtsp(s) URL, synthetic:[options], a V4L2 device, picamera:[options] or
    exec:<command line>; returned stripped."""
    if not isinstance(value, str):
        raise _fail(f"expected a source string, got {kind_of(value)}", hint=_SOURCE_HELP)
    text = value.strip()
    register_url_credentials(text)
    shown = redact_url(text)
    if not text:
        raise _fail("empty source", hint=_SOURCE_HELP)
    lowered = text.lower()
    # Before the whitespace check: a command line has spaces. Only the config file sets sources.
    if lowered.startswith(EXEC_PREFIX):
        if not text.startswith(EXEC_PREFIX):
            raise _fail(f"write the exec source in lower case: {EXEC_PREFIX}…", hint=EXEC_HELP)
        try:
            split_exec(text)
        except ValueError as exc:
            raise _fail(f"bad exec source: {exc}", hint=EXEC_HELP) from None
        return text
    if lowered.startswith(PICAMERA_PREFIX):
        if not text.startswith(PICAMERA_PREFIX):
            raise _fail(f"write the Pi camera source in lower case: {PICAMERA_PREFIX}…", hint=PICAMERA_HELP)
        if any(c.isspace() for c in text):
            raise _fail(f"source {shown!r} contains whitespace", hint=PICAMERA_HELP)
        try:
            parse_picamera(text)
        except ValueError as exc:
            raise _fail(f"bad picamera source: {exc}", hint=PICAMERA_HELP) from None
        return text
    if lowered in ("exec", "picamera"):
        raise _fail(f"write {lowered}: with a colon", hint=EXEC_HELP if lowered == "exec" else PICAMERA_HELP)
    if any(c.isspace() for c in text):
        raise _fail(f"source {shown!r} contains whitespace", hint="percent-encode spaces in URLs as %20")
    if lowered.startswith("synthetic:"):
        return text
    if lowered == "synthetic":
        raise _fail("the demo camera is written 'synthetic:' (with a colon)", hint="source: synthetic:")
    if text.startswith("/"):
        device = text.partition("?")[0]
        if _DEVICE.fullmatch(device):
            try:
                parse_v4l2(text)
            except ValueError as exc:
                raise _fail(f"bad V4L2 source: {exc}", hint=V4L2_HELP) from None
            return text
        raise _fail(f"{shown!r} is not a video device", hint="V4L2 cameras are /dev/videoN or /dev/v4l/by-id/…")

    scheme, sep, rest = text.partition("://")
    if not sep:
        host_like = re.match(r"[\w.-]+(:\d+)?(/|$)", text) and ("." in text or ":" in text)
        hint = f"add the scheme: rtsp://{redact_url(text)}" if host_like else _SOURCE_HELP
        raise _fail(f"source {shown!r} has no scheme", hint=hint)
    if scheme.lower() not in _URL_SCHEMES:
        close = difflib.get_close_matches(scheme.lower(), _URL_SCHEMES, n=1, cutoff=0.5)
        if scheme.lower() in ("http", "https"):
            hint = "camrec records RTSP streams; look up the camera's rtsp:// URL (often rtsp://host:554/…)"
        elif close:
            hint = f"did you mean {redact_url(close[0] + '://' + rest)!r}?"
        else:
            hint = _SOURCE_HELP
        raise _fail(f"unsupported source scheme {scheme!r}:// in {shown!r}", hint=hint)
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise _fail(f"source {shown!r} is not a valid URL (bad port or brackets)", hint=_SOURCE_HELP) from None
    if not parts.hostname:
        raise _fail(f"source {shown!r} has no host", hint="e.g. rtsp://192.168.1.20:554/stream1")
    if port == 0:
        raise _fail(f"source {shown!r} has port 0")
    return text


Source = Annotated[str, BeforeValidator(_source)]

# --- polygons -------------------------------------------------------------------------------


def _unit_coordinate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"expected a number, got {kind_of(value)}")
    if not 0.0 <= value <= 1.0:
        raise _fail(
            f"coordinates are fractions of the frame between 0 and 1, got {value!r}",
            hint="(0, 0) is the top-left corner and (1, 1) the bottom-right, whatever the resolution",
        )
    return float(value)


Coordinate = Annotated[float, BeforeValidator(_unit_coordinate)]
Point = tuple[Coordinate, Coordinate]


def _check_polygon(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if len(points) < 3:
        raise _fail(f"a polygon needs at least 3 points, got {len(points)}", hint="e.g. [[0, 0], [0.5, 0], [0.5, 1]]")
    # Shoelace formula: a zero-area polygon (all points on a line) would silently match nothing.
    twice_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))
    if abs(twice_area) < 1e-9:
        raise _fail("this polygon has no area (its points lie on one line)")
    return points


Polygon = Annotated[tuple[Point, ...], AfterValidator(_check_polygon)]

# --- models ---------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MotionSettings(_Frozen):
    """Motion detection settings (camrec.motion.detector.MotionParams), documented with their trade-offs
    in config/camrec.example.yaml. All thresholds are on the downscaled detection frames; the
    detector's internal constants are camrec.motion.tuning.MotionTuning, not configuration."""

    threshold: Annotated[int, BeforeValidator(_number(int, 1, 255))] = 25
    min_area: Annotated[float, BeforeValidator(_number(float, 0, 1, open_=True))] = 0.002
    min_frames: Annotated[int, BeforeValidator(_number(int, 1, 100))] = 2
    detect_fps: Annotated[float, BeforeValidator(_number(float, 0.5, 30))] = 5.0
    detect_width: Annotated[int, BeforeValidator(_number(int, 64, 1920))] = 320
    zones: tuple[Polygon, ...] = ()
    masks: tuple[Polygon, ...] = ()


class CameraConfig(_Frozen):
    source: Source
    detect_source: Source | None = None
    enabled: bool = True
    pre_roll: Annotated[float, BeforeValidator(_seconds(0, 60))] = 5.0
    post_roll: Annotated[float, BeforeValidator(_seconds(0, 600))] = 10.0
    max_clip: Annotated[float, BeforeValidator(_seconds(10, 3600))] = 300.0
    motion: MotionSettings = MotionSettings()
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout: Annotated[float, BeforeValidator(_seconds(1, 120))] = 10.0
    read_timeout: Annotated[float, BeforeValidator(_seconds(1, 120))] = 5.0

    @field_validator("enabled", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # pydantic would accept 0/1 and "on"/"off" strings; YAML already maps yes/no/on/off to bools.
        if not isinstance(value, bool):
            raise _fail(f"expected true or false, got {kind_of(value)}")
        return value

    @model_validator(mode="after")
    def _pre_roll_fits(self) -> CameraConfig:
        if self.pre_roll >= self.max_clip:
            raise _fail(
                f"pre_roll ({format_duration(self.pre_roll)}) must be shorter than "
                f"max_clip ({format_duration(self.max_clip)})"
            )
        return self


class StorageConfig(_Frozen):
    path: Path
    retention_days: Annotated[float, BeforeValidator(_days)] = 30.0
    max_size: Annotated[int | None, BeforeValidator(_size(1, optional=True))] = None
    min_free: Annotated[int, BeforeValidator(_size(0))] = 1_000_000_000
    fsync_interval: Annotated[float, BeforeValidator(_seconds(0.1, 10))] = 1.0

    @field_validator("path", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise _fail("empty path", hint="e.g. path: /var/lib/camrec")
        if not isinstance(value, str | Path):
            raise _fail(f"expected a directory path, got {kind_of(value)}")
        return value

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        # Relative to the config file, not to the daemon's working directory (which systemd
        # sets to /): "path: clips" next to the config means the same thing wherever it runs.
        value = value.expanduser()
        base = (info.context or {}).get("base_dir")
        if not value.is_absolute() and base is not None:
            value = Path(base) / value
        return value


# --- the web app (issue 11) -----------------------------------------------------------------

WEB_PORT = 8443
_LISTEN_HELP = "write host:port, e.g. ':8443' (all interfaces), '192.168.1.5:8443' or '[::1]:8443'"


def _listen(value: Any) -> str:
    """One listen address, "host:port"; an empty host means every interface. Returned as written."""
    if not isinstance(value, str):
        raise _fail(f"expected a host:port string, got {kind_of(value)}", hint=_LISTEN_HELP)
    text = value.strip()
    try:
        parse_listen(text)
    except ValueError as exc:
        raise _fail(str(exc), hint=_LISTEN_HELP) from None
    return text


def parse_listen(text: str) -> tuple[str, int]:
    """"host:port" → (host, port); ("", port) for every interface. IPv6 hosts go in brackets."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {text!r} has no port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen address {text!r}: port {port} is out of range")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"listen address {text!r}: unbalanced brackets")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"listen address {text!r}: put an IPv6 address in brackets, e.g. [::1]:{port}")
    elif host and not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
        raise ValueError(f"listen address {text!r}: {host!r} is not a host name or address")
    return host, port


def loopback_host(host: str) -> bool:
    """True for a host that only this machine can reach: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TlsFiles(_Frozen):
    """The owner's own certificate (PEM, may hold the chain) and its private key (PEM)."""

    cert: Path
    key: Path

    @field_validator("cert", "key")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        value = value.expanduser()
        base = (info.context or {}).get("base_dir")
        return Path(base) / value if not value.is_absolute() and base is not None else value


def _tls(value: Any) -> Any:
    if value is None or value == "auto":
        return None
    if not isinstance(value, Mapping | BaseModel):
        got = repr(value) if isinstance(value, str) else kind_of(value)
        raise _fail(f"expected auto or {{cert: PATH, key: PATH}}, got {got}",
                    hint="tls: auto (a self-signed certificate), or tls: {cert: /path/cert.pem, key: /path/key.pem}")
    return value


def _flag(value: Any) -> bool:
    # pydantic would accept 0/1 and "on"/"off" strings; YAML already maps yes/no/on/off to bools.
    if not isinstance(value, bool):
        raise _fail(f"expected true or false, got {kind_of(value)}")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


def _ip_address(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"expected an IP address, got {kind_of(value)}")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise _fail(f"{value!r} is not an IP address",
                    hint="a local address of this machine, e.g. 192.168.1.20") from None


def _port_range(value: Any) -> tuple[int, int] | None:
    """"40000-40100" (or [40000, 40100]) → (40000, 40100); None lets the system pick ports."""
    if value is None:
        return None
    parts = value.split("-") if isinstance(value, str) else value
    try:
        lo, hi = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise _fail(f"expected a port range like \"40000-40100\", got {value!r}") from None
    if not 1024 <= lo <= hi <= 65535:
        raise _fail(f"ports must be a range within 1024-65535, got {value!r}")
    return (lo, hi)


class WebRtcConfig(_Frozen):
    """Live view over WebRTC (docs/web.md, "Live view"). Host candidates only: no STUN, no TURN."""

    enabled: Flag = True
    # The local addresses offered to browsers as ICE candidates; empty = every LAN interface.
    addresses: tuple[Annotated[str, BeforeValidator(_ip_address)], ...] = ()
    # UDP ports for the media, so a firewall can let them in; None = any free port.
    ports: Annotated[tuple[int, int] | None, BeforeValidator(_port_range)] = None


class LiveConfig(_Frozen):
    """Live view limits (docs/web.md, "Live view")."""

    enabled: Flag = True
    max_viewers: Annotated[int, BeforeValidator(_number(int, 1, 64))] = 4  # per camera, WebRTC and MSE


class WebConfig(_Frozen):
    """The owner's web app (docs/web.md). It starts only once a web user exists."""

    enabled: bool = True
    listen: tuple[Annotated[str, BeforeValidator(_listen)], ...] = (f":{WEB_PORT}",)
    # None is `tls: auto` (a self-signed certificate made on first start); else the owner's files.
    tls: Annotated[TlsFiles | None, BeforeValidator(_tls)] = None
    plain_http: bool = False
    session_idle: Annotated[float, BeforeValidator(_seconds(60, 30 * 86400))] = 12 * 3600.0
    session_lifetime: Annotated[float, BeforeValidator(_seconds(3600, 366 * 86400))] = 30 * 86400.0
    # None: <storage.path>/.web (see camrec.web.context.state_dir_for and docs/web.md).
    state_dir: Path | None = None
    live: LiveConfig = LiveConfig()
    webrtc: WebRtcConfig = WebRtcConfig()

    @field_validator("enabled", "plain_http", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _fail(f"expected true or false, got {kind_of(value)}")
        return value

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: Any) -> Any:
        value = (value,) if isinstance(value, str) else value
        if isinstance(value, list | tuple) and not value:
            raise _fail("at least one listen address is needed", hint="or switch the web app off: enabled: false")
        return value

    @field_validator("plain_http")
    @classmethod
    def _loopback_only(cls, value: bool, info: ValidationInfo) -> bool:
        # Plain HTTP lets anyone on the path rewrite the page that receives the owner's key, and
        # browsers withhold WebCrypto from it anyway: loopback only (an SSH tunnel, a local proxy).
        exposed = [a for a in info.data.get("listen", ()) if not loopback_host(parse_listen(a)[0])]
        if value and exposed:
            raise _fail(
                f"plain_http is allowed only on loopback addresses, not on {exposed[0]!r}",
                hint="listen on 127.0.0.1:PORT or [::1]:PORT for plain HTTP, or remove plain_http to use HTTPS",
            )
        return value

    @field_validator("state_dir")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        base = (info.context or {}).get("base_dir")
        return Path(base) / value if not value.is_absolute() and base is not None else value

    @model_validator(mode="after")
    def _checks(self) -> WebConfig:
        if self.session_idle > self.session_lifetime:
            raise _fail(f"session_idle ({format_duration(self.session_idle)}) must not be longer than "
                        f"session_lifetime ({format_duration(self.session_lifetime)})")
        return self


def _camera_name(name: str) -> str:
    if not CAMERA_NAME.fullmatch(name):
        raise _fail(
            f"invalid camera name {name!r}: names become directory names",
            hint="use 1-32 characters from A-Z a-z 0-9 _ -",
        )
    return name


def _one_or_many(value: Any) -> Any:
    # "recipients: age1…" (one key, no brackets) is how people write it; take it as a list.
    return (value,) if isinstance(value, str) else value


def _recipient(value: str) -> str:
    from camrec.crypto.keys import parse_recipient  # lazily: keeps config importable on its own

    text = value.strip()
    try:
        parse_recipient(text)
    except IdentityError as exc:
        # keys.py's messages name the offending key (public keys are not secret) and never a private one.
        raise _fail(exc.message, hint=exc.hint or RECIPIENT_HINT) from None
    return text


RECIPIENT_HINT = "recipients are age public keys starting with age1 (the 'public key:' line of age-keygen)"
MIXED_RECIPIENTS = "post-quantum (age1pq1…) and classic (age1…) recipients cannot be mixed: age refuses to " \
    "encrypt one file to both"
MIXED_HINT = "list only age1pq1… keys, or only classic age1… keys"


def post_quantum(recipient: str) -> bool:
    return recipient.strip().startswith("age1pq1")


class Config(_Frozen):
    recipients: Annotated[tuple[Annotated[str, AfterValidator(_recipient)], ...], BeforeValidator(_one_or_many)]
    # Where the recipients came from, when they were read from a file (informational).
    recipients_file: Path | None = None
    storage: StorageConfig
    cameras: dict[Annotated[str, AfterValidator(_camera_name)], CameraConfig]
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    web: WebConfig = WebConfig()
    # Set by load_config (never from YAML): the absolute path of the file this came from.
    source_path: Path | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("recipients")
    @classmethod
    def _at_least_one_recipient(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _fail("at least one recipient (the owner's age public key) is required", hint=RECIPIENT_HINT)
        if len({post_quantum(r) for r in value}) > 1:
            # age refuses to mix them in one file (a classic key would void the post-quantum
            # protection), so every clip would fail: refuse here, before `run` records nothing.
            raise _fail(MIXED_RECIPIENTS, hint=MIXED_HINT)
        return tuple(dict.fromkeys(value))  # drop repeats, keep order

    @field_validator("cameras")
    @classmethod
    def _at_least_one_camera(cls, value: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not value:
            raise _fail(
                "at least one camera is required", hint="e.g. cameras: {front: {source: 'rtsp://host:554/stream'}}"
            )
        seen: dict[str, str] = {}
        for name in value:
            # exFAT/FAT USB disks and macOS are case-insensitive: "Front" and "front" would share files.
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise _fail(f"camera names {other!r} and {name!r} differ only in case; they would share a directory")
        return value


# --- pydantic errors → ConfigError ----------------------------------------------------------


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``, for did-you-mean hints."""
    if len(loc) == 3 and loc[0] == "cameras" and loc[2] == "motion":
        return MotionSettings
    if len(loc) == 2 and loc[0] == "cameras":
        return CameraConfig
    top: dict[KeyPath, type[BaseModel]] = {(): Config, ("storage",): StorageConfig, ("web",): WebConfig,
                                           ("web", "tls"): TlsFiles}
    return top.get(loc)


def _describe(error: Any, loc: KeyPath) -> tuple[str, str | None]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "camrec":
        return str(ctx.get("reason", error["msg"])), ctx.get("hint")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is None:
            return "unknown key", None
        known = [name for name in model.model_fields if name != "source_path"]  # set by camrec
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(known)}"
        return "unknown key", hint
    if kind == "missing":
        if loc and isinstance(loc[-1], int):  # a short tuple, i.e. a point with one number
            return "expected a point [x, y] with two numbers", None
        return "required key is missing", None
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value lines), got {kind_of(error.get('input'))}", None
    if kind in ("tuple_type", "list_type"):
        polygon = any(part in ("zones", "masks") for part in loc)
        example = "each zone or mask is a list of [x, y] points: - [[0, 0], [1, 0], [1, 0.2]]"
        return f"expected a list, got {kind_of(error.get('input'))}", example if polygon else None
    if kind in ("string_type", "path_type"):
        return f"expected a string, got {kind_of(error.get('input'))}", None
    if kind in ("too_short", "too_long") and "tuple" in error["msg"].lower():
        return f"expected a pair [x, y], got {ctx.get('actual_length', '?')} values", None
    return str(error["msg"]), None


def validation_error(exc: ValidationError, label: str, lines: Mapping[KeyPath, int]) -> ConfigError:
    found: list[tuple[int, int, str, str | None]] = []
    errors = exc.errors(include_url=False)
    # Unknown keys per mapping: a missing required key is often one of them, misspelt (storage.paht).
    unknown: dict[KeyPath, list[str]] = {}
    for error in errors:
        if error["type"] == "extra_forbidden":
            where_ = tuple(part for part in error["loc"] if part != "[key]")
            unknown.setdefault(where_[:-1], []).append(str(where_[-1]))
    for index, error in enumerate(errors):
        # Dict key errors end in "[key]"; other non-path parts would be pydantic's internal names.
        loc: KeyPath = tuple(part for part in error["loc"] if part != "[key]")
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 0)
        message, hint = _describe(error, loc)
        if error["type"] == "missing" and loc:
            close = difflib.get_close_matches(str(loc[-1]), unknown.get(loc[:-1], []), n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {loc[-1]!r} where you wrote {close[0]!r}?"
        found.append((line, index, redact(f"{where(label, line or None, loc)}: {message}"), hint))
    found.sort(key=lambda item: (item[0], item[1]))  # report the first problem in file order
    problems = [(m, redact(h) if h else None) for _, _, m, h in found]
    message, hint = problems[0]
    if len(found) > 1:
        more = len(found) - 1
        # Redacted again as a whole: a registered password is hidden wherever it appears, even
        # when it happens to be one of these fixed words.
        message = redact(f"{message} (and {more} more error{'s' if more > 1 else ''}; `camrec check` lists them all)")
    return ConfigError(message, hint, problems)


