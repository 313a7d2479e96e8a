"""Config loading: the minimal config, defaults, and that every error names file:line and key path."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from camrec import redact as redact_module
from camrec.config import CameraConfig, MotionSettings, StorageConfig, load_config, parse_config
from camrec.errors import ConfigError
from camrec.redact import redact

REPO = Path(__file__).resolve().parent.parent
# Public keys made once with age-keygen; public keys are not secrets.
OWNER = "age1t4yp4xullatyw6z006rwuatceerr743hj2h6g5504wlqynhxfeaq2ejmfl"
SPARE = "age1rxt75hajegn4nr76m3hywzpzxmes3fk7hz6rcxyf9g5zw87jzygq9znn4x"
PASSWORD = "Sup3r-S3cret-pw"

HEAD = f"""\
recipients: [{OWNER}]
storage:
  path: /var/lib/camrec
cameras:
  front:
"""


@pytest.fixture(autouse=True)
def _fresh_redaction_registry() -> Iterator[None]:
    redact_module._clear_secrets_for_tests()
    yield
    redact_module._clear_secrets_for_tests()


@pytest.fixture(scope="module")
def identity() -> str:
    """A fresh age private key, made by the real age-keygen (never stored in the repository)."""
    if shutil.which("age-keygen") is None:
        pytest.skip("age-keygen not installed")
    output = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    return next(line for line in output.splitlines() if line.startswith("AGE-SECRET-KEY-"))


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    # The CLI prints "camrec: error: …" and "camrec: hint: …" as one line each.
    assert "\n" not in info.value.message and "\n" not in (info.value.hint or "")
    return info.value


# --- the happy paths ------------------------------------------------------------------------


def test_minimal_config_from_the_issue(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        recipients: [{OWNER}]          # the owner's public key(s)
        storage:
          path: /var/lib/camrec
        cameras:
          front:
            source: rtsp://127.0.0.1:8554/cam
            pre_roll: 3s               # optional; durations as "3s", "2m" or seconds
            post_roll: 3s
        """,
    )
    config = load_config(path, environ={})
    assert config.recipients == (OWNER,)
    assert config.storage.path == Path("/var/lib/camrec")
    assert config.source_path == path.absolute()
    front = config.cameras["front"]
    assert front.source == "rtsp://127.0.0.1:8554/cam"
    assert (front.pre_roll, front.post_roll) == (3.0, 3.0)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + "    source: 'synthetic:'\n"), environ={})
    assert config.log_level == "info"
    assert config.recipients_file is None
    assert config.storage == StorageConfig(path=Path("/var/lib/camrec"))
    storage = config.storage
    assert (storage.retention_days, storage.max_size, storage.min_free, storage.fsync_interval) == (
        30.0,
        None,
        1_000_000_000,
        1.0,
    )
    camera = config.cameras["front"]
    assert camera == CameraConfig(source="synthetic:")
    assert camera.detect_source is None
    assert camera.enabled is True
    assert (camera.pre_roll, camera.post_roll, camera.max_clip) == (5.0, 10.0, 300.0)
    assert (camera.rtsp_transport, camera.open_timeout, camera.read_timeout) == ("tcp", 10.0, 5.0)
    motion = camera.motion
    assert motion == MotionSettings()
    assert (motion.threshold, motion.min_area, motion.min_frames) == (25, 0.002, 2)
    assert (motion.detect_fps, motion.detect_width, motion.zones, motion.masks) == (5.0, 320, (), ())


def test_models_are_frozen_and_strict(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + "    source: 'synthetic:'\n"), environ={})
    with pytest.raises(ValidationError):
        config.log_level = "debug"
    with pytest.raises(ValidationError):
        MotionSettings(treshold=3)  # type: ignore[call-arg]


def test_every_key_set(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        recipients: {OWNER}
        log_level: DEBUG
        storage:
          path: /srv/clips
          retention_days: 7.5
          max_size: 1.5TiB
          min_free: 500MB
          fsync_interval: 250ms
        cameras:
          garage-1:
            source: rtsps://cam.local:322/main
            detect_source: rtsps://cam.local:322/sub
            enabled: no
            pre_roll: 2.5
            post_roll: 1m
            max_clip: 1h
            rtsp_transport: udp
            open_timeout: 20s
            read_timeout: 3s
            motion:
              threshold: 40
              min_area: 0.01
              min_frames: 3
              detect_fps: 2
              detect_width: 640
              zones: [[[0, 0], [1, 0], [1, 1], [0, 1]]]
              masks:
                - [[0, 0], [0.5, 0], [0.5, 0.25]]
          usb:
            source: /dev/video0
        """,
    )
    config = load_config(path, environ={})
    assert config.log_level == "debug"
    assert config.storage.max_size == 1024**4 * 3 // 2
    assert config.storage.min_free == 500_000_000
    assert config.storage.fsync_interval == 0.25
    cam = config.cameras["garage-1"]
    assert cam.enabled is False
    assert (cam.pre_roll, cam.post_roll, cam.max_clip) == (2.5, 60.0, 3600.0)
    assert cam.motion.zones == (((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)),)
    assert cam.motion.masks[0][2] == (0.5, 0.25)
    assert config.cameras["usb"].source == "/dev/video0"


def test_relative_storage_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD.replace("/var/lib/camrec", "clips/store") + "    source: 'synthetic:'\n")
    config = load_config(path, environ={})
    assert config.storage.path == tmp_path / "clips" / "store"


def test_env_substitution_and_registration(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "    source: rtsp://admin:${env:CAM_PW}@10.0.0.5:554/s1\n")
    config = load_config(path, environ={"CAM_PW": PASSWORD})
    assert config.cameras["front"].source == f"rtsp://admin:{PASSWORD}@10.0.0.5:554/s1"
    # Registered: the password is hidden even where it appears on its own.
    assert redact(f"auth failed for {PASSWORD}") == "auth failed for ***"


def test_literal_dollar_brace_is_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "    source: 'synthetic:label=$${env:X}'\n")
    assert load_config(path, environ={}).cameras["front"].source == "synthetic:label=${env:X}"


def test_systemd_credential_substitution(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "front-pw").write_text(PASSWORD + "\n")
    path = write(tmp_path, HEAD + "    source: rtsp://u:${cred:front-pw}@h/x\n")
    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.cameras["front"].source == f"rtsp://u:{PASSWORD}@h/x"
    assert PASSWORD not in redact(f"x {PASSWORD}")


def test_url_credentials_are_registered_at_load_time(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + f"    source: rtsp://user:{PASSWORD}@cam/x\n")
    load_config(path, environ={})
    assert redact(f"ffmpeg said: bad password {PASSWORD}") == "ffmpeg said: bad password ***"


def test_yaml_anchors_merge_keys_and_x_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        recipients: [{OWNER}]
        storage: {{path: /x}}
        x-camera: &camera
          pre_roll: 2s
          post_roll: 4s
        cameras:
          a:
            <<: *camera
            source: rtsp://a/x
          b:
            <<: *camera
            source: rtsp://b/x
            post_roll: 9s
        """,
    )
    cams = load_config(path, environ={}).cameras
    assert (cams["a"].pre_roll, cams["a"].post_roll) == (2.0, 4.0)
    assert (cams["b"].pre_roll, cams["b"].post_roll) == (2.0, 9.0)


def test_recipients_file(tmp_path: Path) -> None:
    (tmp_path / "recipients.txt").write_text(f"# the owner\n{OWNER}\n\n  {SPARE}  # spare\n".replace("  # spare", ""))
    path = write(
        tmp_path,
        "recipients_file: recipients.txt\nstorage: {path: /x}\ncameras: {a: {source: 'synthetic:'}}\n",
    )
    config = load_config(path, environ={})
    assert config.recipients == (OWNER, SPARE)
    assert config.recipients_file == tmp_path / "recipients.txt"


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONT_CAM_PASSWORD", PASSWORD)
    config = load_config(REPO / "config" / "camrec.example.yaml")
    front = config.cameras["front"]
    assert PASSWORD in front.source
    assert front.detect_source is not None and front.detect_source != front.source
    assert redact(front.source).startswith("rtsp://***:***@")


# --- errors: file:line, key path, hints ---------------------------------------------------


def test_misspelled_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "    source: rtsp://h/x\n    motion:\n      treshold: 30\n")
    error = config_error(path)
    assert error.message == f"{path}:8: cameras.front.motion.treshold: unknown key"
    assert error.hint == "did you mean 'threshold'?"
    assert error.exit_code == 3


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, HEAD + "    source: rtsp://h/x\n    colour: red\n"))
    assert "cameras.front.colour: unknown key" in error.message
    assert error.hint is not None and "pre_roll" in error.hint


def test_top_level_typo(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, HEAD + "    source: rtsp://h/x\nlog_levl: debug\n"))
    assert error.message.endswith(":7: log_levl: unknown key")
    assert error.hint == "did you mean 'log_level'?"


@pytest.mark.parametrize(
    ("body", "line", "key", "fragment"),
    [
        ("    source: rtsp://h/x\n    motion:\n      threshold: yes\n", 8, "cameras.front.motion.threshold", "number"),
        ("    source: rtsp://h/x\n    motion:\n      threshold: 300\n", 8, "cameras.front.motion.threshold", "255"),
        ("    source: rtsp://h/x\n    motion:\n      min_area: 1\n", 8, "cameras.front.motion.min_area", "between"),
        ("    source: rtsp://h/x\n    motion:\n      detect_fps: 0.1\n", 8, "cameras.front.motion.detect_fps", "0.5"),
        ("    source: rtsp://h/x\n    motion: 5\n", 7, "cameras.front.motion", "expected a mapping"),
        ("    source: rtsp://h/x\n    pre_roll: 90s\n", 7, "cameras.front.pre_roll", "between 0s and 1m"),
        ("    source: rtsp://h/x\n    post_roll: soon\n", 7, "cameras.front.post_roll", "not a duration"),
        ("    source: rtsp://h/x\n    max_clip: 5s\n", 7, "cameras.front.max_clip", "between 10s and 1h"),
        ("    source: rtsp://h/x\n    enabled: 1\n", 7, "cameras.front.enabled", "true or false"),
        ("    source: rtsp://h/x\n    rtsp_transport: http\n", 7, "cameras.front.rtsp_transport", "'tcp' or 'udp'"),
        ("    source: rtsp://h/x\n    pre_roll: 20s\n    max_clip: 10s\n", 5, "cameras.front", "shorter than"),
        ("    source: [rtsp://h/x]\n", 6, "cameras.front.source", "expected a source string"),
        ("    pre_roll: 3s\n", 5, "cameras.front.source", "required key is missing"),
        (
            "    source: rtsp://h/x\n    motion:\n      zones:\n        - [[0, 0], [1, 1]]\n",
            9,
            "cameras.front.motion.zones[0]",
            "at least 3 points",
        ),
        (
            "    source: rtsp://h/x\n    motion:\n      masks:\n        - [[0, 0], [1.5, 0], [1, 1]]\n",
            9,
            "cameras.front.motion.masks[0][1][0]",
            "fractions of the frame",
        ),
        (
            "    source: rtsp://h/x\n    motion:\n      masks:\n        - [[0, 0], [0.5, 0.5], [1, 1]]\n",
            9,
            "cameras.front.motion.masks[0]",
            "no area",
        ),
    ],
)
def test_wrong_values_name_file_line_and_key_path(
    tmp_path: Path, body: str, line: int, key: str, fragment: str
) -> None:
    path = write(tmp_path, HEAD + body)
    error = config_error(path)
    assert error.message.startswith(f"{path}:{line}: {key}: "), error.message
    assert fragment in error.message


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ("  path: /x\n  max_size: 5G\n", ":4: storage.max_size: ambiguous size unit"),
        ("  path: /x\n  max_size: 0\n", ":4: storage.max_size: must be at least 1 bytes"),
        ("  path: /x\n  min_free: -1\n", ":4: storage.min_free: a size cannot be negative"),
        ("  path: /x\n  retention_days: 0\n", ":4: storage.retention_days: must be greater than 0"),
        ("  path: /x\n  retention_days: 30d\n", ":4: storage.retention_days: expected a number of days"),
        ("  path: /x\n  fsync_interval: 30s\n", ":4: storage.fsync_interval: must be between 0.1s and 10s"),
        ("  path: ''\n", ":3: storage.path: empty path"),
        ("  path: 5\n", ":3: storage.path: expected a directory path"),
        ("  retention_days: 3\n", ":2: storage.path: required key is missing"),
    ],
)
def test_storage_errors(tmp_path: Path, storage: str, fragment: str) -> None:
    text = f"recipients: [{OWNER}]\nstorage:\n{storage}cameras: {{a: {{source: 'synthetic:'}}}}\n"
    error = config_error(write(tmp_path, text))
    assert fragment in error.message


def test_several_errors_report_the_first_in_file_order(tmp_path: Path) -> None:
    body = "    source: rtsp://h/x\n    post_roll: -1\n    motion:\n      threshold: 0\n      min_frames: 0\n"
    error = config_error(write(tmp_path, HEAD + body))
    assert ":7: cameras.front.post_roll:" in error.message
    assert error.message.endswith("(and 2 more errors; `camrec check` lists them all)")
    assert [m.split(": ")[0].rsplit(":", 1)[-1] for m, _ in error.problems] == ["7", "9", "10"]


@pytest.mark.parametrize(
    ("source", "fragment", "hint"),
    [
        ("rstp://h/x", "unsupported source scheme", "did you mean 'rtsp://h/x'?"),
        ("rtps://h/x", "unsupported source scheme", "did you mean 'rtsp"),
        ("http://h/x", "unsupported source scheme", "rtsp://"),
        ("192.168.1.20:554/stream", "has no scheme", "add the scheme: rtsp://192.168.1.20:554/stream"),
        ("synthetic", "synthetic:", "synthetic:"),
        ("rtsp:///path", "has no host", "rtsp://"),
        ("rtsp://h:99999/x", "not a valid URL", "rtsp://"),
        ("/dev/sda", "not a video device", "/dev/video"),
        ("'rtsp://h/a b'", "whitespace", "%20"),
    ],
)
def test_bad_sources_get_hints(tmp_path: Path, source: str, fragment: str, hint: str) -> None:
    error = config_error(write(tmp_path, HEAD + f"    source: {source}\n"))
    assert ":6: cameras.front.source:" in error.message
    assert fragment in error.message
    assert error.hint is not None and hint in error.hint


@pytest.mark.parametrize(
    "source",
    ["rtsp://h/x", "RTSP://h:554/x", "rtsps://[::1]:322/x", "'synthetic:'", "'synthetic:fps=10'", "/dev/video2"],
)
def test_good_sources(tmp_path: Path, source: str) -> None:
    assert load_config(write(tmp_path, HEAD + f"    source: {source}\n"), environ={})


@pytest.mark.parametrize(
    "source",
    [
        "rstp://admin:{pw}@cam/x",  # a typo in the scheme
        "rtsp://admin:{pw}@cam:99999/x",  # a bad port
        "rtsp://admin:{pw}@/x",  # no host
        "http://admin:{pw}@cam/x",
        "'rtsp://admin:{pw}@cam/a b'",
    ],
)
@pytest.mark.parametrize("via_env", [False, True])
def test_password_never_appears_in_config_errors(tmp_path: Path, source: str, via_env: bool) -> None:
    pw = "${env:CAM_PW}" if via_env else PASSWORD
    error = config_error(write(tmp_path, HEAD + f"    source: {source.format(pw=pw)}\n"), {"CAM_PW": PASSWORD})
    assert "source" in error.message
    assert PASSWORD not in str(error)
    assert PASSWORD not in error.message
    assert PASSWORD not in (error.hint or "")
    assert "admin" not in error.message  # user names are hidden in URLs too


def test_password_in_an_unrelated_bad_value_is_not_echoed(tmp_path: Path) -> None:
    error = config_error(
        write(tmp_path, HEAD + "    source: rtsp://h/x\n    pre_roll: ${env:CAM_PW}\n"), {"CAM_PW": PASSWORD}
    )
    assert "cameras.front.pre_roll" in error.message
    assert PASSWORD not in str(error)


def test_missing_env_var_names_variable_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "    source: rtsp://admin:${env:FRONT_PW}@h/x\n")
    error = config_error(path, environ={})
    assert error.message == f"{path}:6: cameras.front.source: environment variable FRONT_PW is not set"
    assert error.hint is not None and "FRONT_PW" in error.hint


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("rtsp://u:${PW}@h/x", "unsupported substitution '${PW}'"),
        ("rtsp://u:${env:}@h/x", "unsupported substitution"),
        ("rtsp://u:${env:PW@h/x", "unterminated"),
        ("rtsp://u:${cred:pw}@h/x", "CREDENTIALS_DIRECTORY is not set"),
    ],
)
def test_bad_substitutions(tmp_path: Path, value: str, fragment: str) -> None:
    error = config_error(write(tmp_path, HEAD + f"    source: {value}\n"), {"PW": PASSWORD})
    assert ":6: cameras.front.source:" in error.message
    assert fragment in error.message


def test_identity_in_config_is_refused(tmp_path: Path, identity: str) -> None:
    path = write(tmp_path, HEAD + f"    source: rtsp://h/x\n# my key: {identity}\n")
    error = config_error(path)
    assert error.message == (
        f"{path}:7: contains an age identity (private key); the recorder must only hold public keys"
    )
    assert error.hint == "put the owner's public key (age1…) in 'recipients' and keep the identity off this device"
    assert identity not in str(error)


def test_identity_as_recipient_is_refused(tmp_path: Path, identity: str) -> None:
    text = f"recipients: [{identity}]\nstorage: {{path: /x}}\ncameras: {{a: {{source: 'synthetic:'}}}}\n"
    error = config_error(write(tmp_path, text))
    assert "contains an age identity" in error.message
    assert identity not in str(error)


def test_identity_arriving_through_env_is_refused(tmp_path: Path, identity: str) -> None:
    path = write(tmp_path, HEAD + "    source: rtsp://u:${env:PW}@h/x\n")
    error = config_error(path, environ={"PW": identity})
    assert error.message.startswith(
        f"{path}:6: cameras.front.source: the value of ${{env:PW}} contains an age identity"
    )
    assert identity not in str(error)


def test_identity_in_recipients_file_is_refused(tmp_path: Path, identity: str) -> None:
    (tmp_path / "keys.txt").write_text(f"{OWNER}\n{identity}\n")
    path = write(tmp_path, "recipients_file: keys.txt\nstorage: {path: /x}\ncameras: {a: {source: 'synthetic:'}}\n")
    error = config_error(path)
    assert error.message.startswith(f"{tmp_path / 'keys.txt'}:2: contains an age identity")
    assert identity not in str(error)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            HEAD + "    source: rtsp://h/x\n    source: rtsp://h/y\n",
            7,
            "cameras.front.source: duplicate key (first set on line 6)",
        ),
        (HEAD + "    source: rtsp://h/x\ncameras: {}\n", 7, "cameras: duplicate key (first set on line 4)"),
    ],
)
def test_duplicate_keys(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path).message == f"{path}:{line}: {fragment}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cameras:\n  bad.name: {source: 'synthetic:'}\n", "cameras.bad.name: invalid camera name"),
        ("cameras:\n  " + "x" * 33 + ": {source: 'synthetic:'}\n", "invalid camera name"),
        ("cameras:\n  Front: {source: 'synthetic:'}\n  front: {source: 'synthetic:'}\n", "differ only in case"),
        ("cameras: {}\n", "at least one camera"),
        ("cameras:\n", "cameras: expected a mapping"),
    ],
)
def test_camera_names_and_count(tmp_path: Path, text: str, fragment: str) -> None:
    error = config_error(write(tmp_path, f"recipients: [{OWNER}]\nstorage: {{path: /x}}\n" + text))
    assert fragment in error.message


@pytest.mark.parametrize(
    ("recipients", "fragment"),
    [
        ("", "no recipients"),
        ("recipients: []\n", "recipients: at least one recipient"),
        ("recipients: [age1bogus]\n", "recipients[0]: malformed recipient"),
        (f"recipients: [{OWNER}]\nrecipients_file: r.txt\n", "not both"),
        ("recipients_file: nowhere.txt\n", "no such recipients file"),
        ("recipients_file: empty.txt\n", "no recipients in this file"),
        ("recipients_file: bad.txt\n", "bad.txt:2: "),
    ],
)
def test_recipient_errors(tmp_path: Path, recipients: str, fragment: str) -> None:
    (tmp_path / "empty.txt").write_text("# nobody\n\n")
    (tmp_path / "bad.txt").write_text(f"{OWNER}\nssh-rsa AAAA\n")
    text = recipients + "storage: {path: /x}\ncameras: {a: {source: 'synthetic:'}}\n"
    error = config_error(write(tmp_path, text))
    assert fragment in error.message


# --- errors: the file itself ----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    error = config_error(tmp_path / "nope.yaml")
    assert error.message == f"{tmp_path / 'nope.yaml'}: no such file"
    assert error.hint


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in config_error(tmp_path).message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path).message == f"{path}: the file is empty"


@pytest.mark.parametrize(
    ("text", "line", "hint"),
    [
        ("storage:\n  path: /x\n   bad: [\n", 3, None),
        ("storage:\n  path: [/x\n", 3, None),
        ("storage:\n  path: /x\n\tmax_size: 1GB\n", 3, "tabs"),
        (HEAD + "    source: synthetic:\n", 6, 'source: "synthetic:"'),
        ("a: 1\n---\nb: 2\n", 2, None),
    ],
)
def test_yaml_syntax_error_has_a_line(tmp_path: Path, text: str, line: int, hint: str | None) -> None:
    path = write(tmp_path, text)
    error = config_error(path)
    assert error.message.startswith(f"{path}:{line}: invalid YAML: "), error.message
    if hint:
        assert error.hint is not None and hint in error.hint


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [*a]\n", "a[0]: a YAML alias refers to the value that contains it"),
        ("a: &a {<<: *a}\n", "a: a YAML alias refers to the value that contains it"),
        ("a: " + "[" * 50 + "]" * 50 + "\n", "nested too deeply"),
        ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"{k}: &{k} [{', '.join([f'*{j}'] * 10)}]\n" for j, k in zip("abcde", "bcdef", strict=True)),
            "more than 100000 values",
        ),
        ('a: "x\x00"\n', "invalid YAML: unacceptable character"),
        ("source: !secret front\n", "source: invalid value: could not determine a constructor"),
    ],
)
def test_hostile_or_odd_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    error = config_error(write(tmp_path, text))
    assert fragment in error.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "at the top level" in config_error(write(tmp_path, text)).message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"storage:\n  path: /caf\xe9\n")
    assert config_error(path).message == f"{path}:2: not UTF-8 text"


def test_source_path_cannot_be_set_from_yaml(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, HEAD + "    source: rtsp://h/x\nsource_path: /etc\n"))
    assert "source_path: unknown key" in error.message


def test_parse_config_without_a_file() -> None:
    text = HEAD + "    source: 'synthetic:'\n"
    config = parse_config(text, environ={})
    assert config.source_path is None
    with pytest.raises(ConfigError, match=r"^<config>:6: cameras\.front\.source: "):
        parse_config(HEAD + "    source: rstp://h/x\n", environ={})
