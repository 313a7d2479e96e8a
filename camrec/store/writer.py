"""The store: the crash-safe clip write procedure, start-up reconciliation and retention, in one place.

Write procedure (invariants numbered as in docs/storage.md):
  I1  A clip file is created with O_EXCL (never overwriting anything) and its age header is fsynced,
      and its directory fsynced, before the index learns of it (row state `recording`).
  I2  The index's `size`/`end` of an open clip only ever grow to values already fsynced to the file
      (checkpoint every `fsync_interval` seconds), so the index never points past durable bytes.
  I3  A clip becomes `complete` only after its final age chunk, thumbnail and details are fsynced.
  I4  Deletion writes the signed `delete` entry first, then marks the row `garbage`, unlinks the
      files and drops the row; start-up finishes a `garbage` row only if its signed entry exists.
Nothing but age-encrypted bytes is ever written under the storage root (besides the index).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from camrec.clock import Clock, SystemClock
from camrec.crypto.stream import AgeWriter, encrypt_bytes
from camrec.errors import DiskFullError, StorageError, StorageUnavailable
from camrec.store import layout
from camrec.store.index import ClipIndex, ClipRow
from camrec.store.layout import fsync_dir
from camrec.store.manifest import Manifest, safe_clip_path
from camrec.store.retention import LiveClip, plan_retention

log = logging.getLogger(__name__)

_FILE_MODE = 0o640
_DIR_MODE = 0o750
# When the disk is too full to open the index, start-up retention frees at least this much (or
# storage.min_free, if larger) before trying again: room for the index's WAL and a first clip.
INDEX_HEADROOM = 4 * 1024 * 1024


def _storage_error(action: str, path: Path | str, exc: OSError) -> StorageError:
    hint = None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"cannot {action} {path}: the disk is full ({exc.strerror or exc})",
                             hint="lower storage.max_size / retention_days, or free space")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "check the storage directory's owner and permissions (the service user must write it)"
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}", hint=hint)


class Store:
    def __init__(self, root: Path, recipients: Sequence[Any], *, fsync_interval: float = 1.0,
                 min_free: int = 0, clock: Clock | None = None) -> None:
        self.root = root
        self.min_free = min_free
        self.recipients = list(recipients)
        self.fsync_interval = fsync_interval
        self.clock = clock or SystemClock()
        try:
            root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        except OSError as exc:
            raise _storage_error("create the storage directory", root, exc) from None
        if not os.access(root, os.W_OK):
            raise StorageError(f"storage directory {root} is not writable",
                               hint="check its owner and permissions (the service user must write it)")
        # Start-up order (docs/storage.md, "A full disk at start-up"): the manifest first, because
        # it needs no new space to be read and it is what retention trusts; then the index, after
        # retention has made room for it if the disk is full.
        # The tamper-evident record of every closed and deleted clip (docs/tamper-evidence.md).
        try:
            self.manifest = Manifest(root, clock=self.clock)
        except StorageError as exc:
            # A new store on a full disk can't create its device key: that too is waited out.
            if exc.__class__ is StorageError and _nearly_full(root):
                raise DiskFullError(f"{exc.message} (the disk is full)", hint=exc.hint) from None
            raise
        try:
            self.index = self._open_index()
        except StorageError:
            self.manifest.close()
            raise
        # The filesystem we started on: if the storage disk is unmounted under us, the same path
        # then points into the root filesystem, which must not fill up with clips.
        self._device = os.stat(root).st_dev
        self.wants_housekeeping = threading.Event()
        self._unsettled: dict[int, dict[str, object]] = {}  # clip id → row fields not yet in the index

    def _open_index(self) -> ClipIndex:
        path = self.root / layout.INDEX_NAME
        try:
            return ClipIndex(path)
        except DiskFullError:
            pass  # retention first; if that frees nothing, the caller reports the error (once)
        deleted = self._free_space_from_manifest()
        index = ClipIndex(path)  # DiskFullError again if nothing could be freed: the daemon waits
        try:
            # The clips just deleted are still rows of the index: drop them (their deletion is signed).
            for row in index.query():
                if row.path in deleted:
                    index.delete(row.id)
        except StorageError:
            index.close()
            raise
        return index

    def _free_space_from_manifest(self) -> set[str]:
        """Start-up retention for a disk too full to open the index: the same signed planner as
        `apply_retention` (clips the manifest holds, oldest first), with the space limit only, until
        INDEX_HEADROOM (or min_free) is free; each deletion is signed before its files go. The age
        limit waits for the normal retention run."""
        present = set(layout.iter_video_files(self.root))
        live = [c for c in self.manifest.live_clips() if c.path in present]
        try:
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise _storage_error("measure free space on", self.root, exc) from None
        doomed = plan_retention(live, now_ct=self.manifest.camtime.now(), retention_days=float("inf"),
                                max_size=None, free_bytes=free, min_free=max(self.min_free, INDEX_HEADROOM))
        if not doomed:
            return set()
        try:
            self.manifest.record_deleted(doomed)
        except StorageError as exc:
            # Too full even for the entry: free the oldest clip's files first (as apply_retention does).
            log.error("manifest: %s; removing the oldest clip's files to make room", exc.message)
            self._unlink_files(self._files_of(doomed[0].clip.path))
            self.manifest.record_deleted(doomed)
        for d in doomed:
            self._unlink_files(self._files_of(d.clip.path))
        log.warning("retention: the disk was too full to open the index; deleted %d clip(s), %d bytes, "
                    "oldest first, to make room for it", len(doomed), sum(d.clip.size for d in doomed))
        return {d.clip.path for d in doomed}

    def check_mount(self) -> None:
        """Raises StorageError if the storage directory is gone or now lies on another filesystem."""
        try:
            device = os.stat(self.root).st_dev
        except OSError as exc:
            raise StorageUnavailable(f"cannot reach the storage directory {self.root}: {exc.strerror or exc}",
                                     hint="is the storage disk mounted?") from None
        if device != self._device:
            raise StorageUnavailable(f"storage {self.root} is no longer on the filesystem camrec started with "
                               "(was its disk unmounted?); not recording there",
                               hint="mount the storage disk again and restart camrec")

    def mark_partial(self, clip_id: int, size: int, end: float) -> None:
        """Records a clip that couldn't be finished. On a full disk the index itself may refuse the
        update: it is then retried by `settle()` (housekeeping, the next clip, close) once possible."""
        self.settle_later(clip_id, state="partial", size=size, end=end)

    def settle_later(self, clip_id: int, **fields: object) -> None:
        """Updates a clip's row now, or at the next `settle()` if the index refuses (a full disk)."""
        self._unsettled[clip_id] = fields
        self.settle()

    def settle(self) -> None:
        for clip_id, fields in list(self._unsettled.items()):
            try:
                self.index.update(clip_id, **fields)
            except StorageError:
                return
            del self._unsettled[clip_id]

    def last_end(self, camera: str) -> float:
        """End of the newest clip of `camera` in the index (-inf when there is none)."""
        rows = self.index.query(camera=camera)
        return max((r.end for r in rows), default=float("-inf"))

    # -- writing -------------------------------------------------------------------------------

    def _make_dirs(self, rel_dir: str, create: bool = True) -> int:
        """Creates <root>/<camera>/<date>/, fsyncing each parent so the new entries survive a crash,
        and returns a descriptor of it. Each component is opened with O_NOFOLLOW: a camera or day
        directory that is a symlink (or anything but a directory) is refused, never written through,
        so no clip can land outside the storage root."""
        try:
            return layout.open_dirs(self.root, rel_dir.split("/"), create=create, mode=_DIR_MODE)
        except layout.UnsafePath as exc:
            camera = rel_dir.split("/", 1)[0]
            raise StorageError(
                f"{layout.escaped(str(self.root / str(exc.filename)))} is {exc.strerror}: refusing to write "
                f"camera {camera}'s clips through it",
                hint="camrec writes only inside the storage directory: replace it with a real directory "
                     "(or remove it) and restart camrec") from None
        except OSError as exc:
            raise _storage_error("create", self.root / rel_dir, exc) from None

    def _create_in_dir(self, rel: str, make_dirs: bool = True) -> int:
        """Creates a new file (O_EXCL, never through a link) at `rel`; raises FileExistsError if taken."""
        rel_dir, name = rel.rsplit("/", 1)
        dfd = self._make_dirs(rel_dir, create=make_dirs)
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE,
                           dir_fd=dfd)
        finally:
            os.close(dfd)

    def _create_exclusive(self, camera: str, start: float, suffix: str) -> tuple[str, int]:
        for attempt in range(100):
            rel = layout.clip_relpath(camera, start, suffix, attempt)
            try:
                return rel, self._create_in_dir(rel)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _storage_error("create", self.root / rel, exc) from None
        raise StorageError(f"cannot find a free file name for a {camera} clip at {start}")

    def open_clip(self, camera: str, start: float) -> OpenClip:
        """Creates the clip file and its `recording` index row (invariant I1)."""
        self.check_mount()
        self.settle()
        rel, fd = self._create_exclusive(camera, start, layout.VIDEO_SUFFIX)
        clip = OpenClip(self, camera, start, rel, fd)
        self.index.checkpoint()  # so that the clip can still be marked `partial` if the disk fills
        return clip

    def write_sidecar(self, video_rel: str, suffix: str, plaintext: bytes) -> tuple[str, int]:
        """Writes a small encrypted file (thumbnail, details) next to a clip; returns (relpath, size)."""
        rel = layout.sibling(video_rel, suffix)
        data = encrypt_bytes(plaintext, self.recipients)
        path = self.root / rel
        try:
            # Next to its video: the directory exists already (if it vanished, so did the storage disk).
            fd = self._create_in_dir(rel, make_dirs=False)
        except OSError as exc:  # the name is taken (perhaps by something planted): not ours to remove
            raise _storage_error("create", path, exc) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._unlink_files([rel])
            raise _storage_error("write", path, exc) from None
        return rel, len(data)

    # -- start-up reconciliation ----------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Makes the index and the files agree after any stop, clean or not. Returns counts."""
        counts = {"partial": 0, "missing": 0, "adopted": 0, "removed": 0, "garbage": 0}
        # One walk that never follows a link: FIFOs, sockets, devices and symlinks in the tree are
        # logged (once) and then left alone: not opened, not adopted, not deleted through.
        tree = layout.scan_clip_tree(self.root)
        layout.warn_refused(tree, log)
        rows = self.index.query()
        known = {row.path for row in rows}
        deleting = self._deletions_to_finish(rows)
        for row in rows:
            if layout.parse_relpath(row.path) is None:
                # Not a path camrec writes (`..`, absolute, another layout): the index was edited.
                log.warning("%s: index row %d has the path %s, which is not a clip path; ignored",
                            layout.escaped(row.camera), row.id, layout.escaped(row.path))
                continue
            exists = row.path in tree.files
            if row.path in deleting:
                counts["garbage"] += self._finish_garbage(row, exists, signed=deleting[row.path])
            elif row.state == "recording":
                if exists:
                    size = self._clip_bytes(row.path)
                    self.index.update(row.id, state="partial", size=size)
                    counts["partial"] += 1
                    log.warning("%s: clip %s was cut short by a stop; kept as partial (salvageable)",
                                row.camera, row.path)
                else:
                    self.index.update(row.id, state="missing")
                    counts["missing"] += 1
            elif row.state in ("complete", "partial") and not exists:
                self.index.update(row.id, state="missing")
                counts["missing"] += 1
                log.warning("%s: clip %s is listed in the index but its file is gone", row.camera, row.path)
        for rel in tree.videos:
            if rel in known:
                continue
            parsed = layout.parse_video_name(rel.rsplit("/", 1)[-1])
            assert parsed is not None
            payload = _has_payload(self.root, rel)
            if payload is None:
                continue  # replaced by a link or a FIFO since the walk: leave it alone
            if not payload:
                # Created but the header never reached the disk: nothing to salvage.
                self._unlink_files([rel, layout.sibling(rel, layout.THUMB_SUFFIX),
                                    layout.sibling(rel, layout.META_SUFFIX)])
                counts["removed"] += 1
                continue
            camera, start = parsed
            self.index.insert(camera, start, rel, self._clip_bytes(rel), state="partial")
            counts["adopted"] += 1
            log.warning("%s: adopted unindexed clip %s as partial", camera, rel)
        # Clips that were closed or cut without reaching the manifest (a crash between the two).
        counts["recorded"] = self.manifest.reconcile(self.index.query(states=("complete", "partial")))["recorded"]
        return counts

    def _deletions_to_finish(self, rows: list[ClipRow]) -> dict[str, bool]:
        """Rows a deletion was started for: in `garbage`, or deleted in the manifest (a crash between
        the signed entry and the row update). Maps each to whether a *signed* `delete` entry exists."""
        started = [r.path for r in rows if r.state == "garbage"
                   or (self.manifest.latest(r.path) or {}).get("kind") == "delete"]
        signed = self.manifest.signed_deletions(started) if started else set()
        return {path: path in signed for path in started}

    def _finish_garbage(self, row: ClipRow, exists: bool, *, signed: bool) -> bool:
        """Finishes a deletion only if the signed manifest made it. The index isn't signed (a review
        set rows to `garbage` by hand and the daemon then deleted and signed them): a `garbage` row
        without a signed `delete` entry goes back to its signed state instead."""
        if signed:
            self._unlink_clip(row)
            return True
        if row.state != "garbage":
            return False  # an unsigned `delete` line in the manifest: nothing to do (verify reports it)
        latest = self.manifest.latest(row.path)
        state = "complete" if latest is not None and latest.get("kind") in ("clip", "rekey") else "partial"
        self.index.update(row.id, state=state if exists else "missing")
        log.warning("%s: clip %s was marked for deletion in the index, but the signed manifest never "
                    "deleted it: kept (restored to %s)", row.camera, row.path, state if exists else "missing")
        return False

    def _clip_bytes(self, video_rel: str) -> int:
        """Bytes of the clip's regular files (a link or FIFO in their place counts nothing)."""
        return sum(layout.regular_size(self.root, layout.sibling(video_rel, suffix)) or 0
                   for suffix in layout.CLIP_SUFFIXES)

    # -- retention ------------------------------------------------------------------------------

    def apply_retention(self, *, retention_days: float, max_size: int | None, min_free: int,
                        progress: Callable[[], object] | None = None) -> list[LiveClip]:
        """Deletes what the retention limits demand (invariant I4); returns the deleted clips.

        Planned from the signed manifest (never the index, which anyone with file access can
        edit), with ages on camrec's own clock (a stepped wall clock ages nothing). The signed
        `delete` entries are written first, then the rows become `garbage`, then files go: so a
        `garbage` row always has its entry, and start-up may finish it (see `_finish_garbage`).
        `progress` is called after each clip: a first run over a year of clips can take a while on
        an SD card, and the supervisor must keep feeding systemd's watchdog meanwhile."""
        self.manifest.tick()
        self.manifest.camtime.suspect()  # logs once; `camrec status` shows it (camtime.last_suspect)
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        rows = {r.path: r for r in self.index.query()}
        live = self.manifest.live_clips()
        # Clips being written count with what they really take on disk, not the index's (unsigned) size.
        recorded = {c.path for c in live}
        in_progress = sum(self._clip_bytes(r.path) for r in rows.values()
                          if r.state == "recording" and r.path not in recorded and safe_clip_path(r.path))
        doomed = plan_retention(live, now_ct=self.manifest.camtime.now(),
                                retention_days=retention_days, max_size=max_size, in_progress=in_progress,
                                free_bytes=free, min_free=min_free)
        if not doomed:
            return []
        try:
            self.manifest.record_deleted(doomed)
        except StorageError as exc:
            if doomed[0].why["reason"] == "age":
                raise  # nothing is deleted without its signed entry; retried at the next turn
            # The disk is too full even for the entry: free the oldest clip's files first (verify
            # shows them `missing` until the entry below is written), or nothing ever gets freed.
            log.error("manifest: %s; removing the oldest clip's files to make room", exc.message)
            self._unlink_files(self._files_of(doomed[0].clip.path))
            self.manifest.record_deleted(doomed)
        for d in doomed:
            row = rows.get(d.clip.path)
            if row is not None:
                self.index.update(row.id, state="garbage")
        for d in doomed:
            self._unlink_files(self._files_of(d.clip.path))
            row = rows.get(d.clip.path)
            if row is not None:
                self.index.delete(row.id)
            if progress is not None:
                progress()
        return [d.clip for d in doomed]

    @staticmethod
    def _files_of(video_rel: str) -> list[str]:
        return [video_rel, *(layout.sibling(video_rel, s) for s in (layout.THUMB_SUFFIX, layout.META_SUFFIX))]

    def _unlink_clip(self, row: ClipRow) -> None:
        self._unlink_files([row.path, layout.sibling(row.path, layout.THUMB_SUFFIX),
                            layout.sibling(row.path, layout.META_SUFFIX)])
        self.index.delete(row.id)

    def _unlink_files(self, rels: list[str]) -> None:
        """Unlinks clip files, each reached through its directories without following a link; only
        regular files are removed (a link, FIFO or device in a clip's place is left, and logged)."""
        by_dir: dict[str, list[str]] = {}
        for rel in rels:
            if layout.parse_relpath(rel) is None:
                log.warning("storage: not deleting %s: not a clip path", layout.escaped(rel))
                continue
            rel_dir, name = rel.rsplit("/", 1)
            by_dir.setdefault(rel_dir, []).append(name)
        for rel_dir, names in by_dir.items():
            try:
                dfd = layout.open_dirs(self.root, rel_dir.split("/"))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("storage: not deleting in %s: %s", layout.escaped(rel_dir), exc.strerror or exc)
                continue
            try:
                removed = False
                for name in names:
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        log.warning("storage: not deleting %s/%s: it is %s", layout.escaped(rel_dir),
                                    layout.escaped(name), layout.describe_kind(st.st_mode))
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dfd)
                        removed = True
                if removed:
                    os.fsync(dfd)
            finally:
                os.close(dfd)
            if removed:
                # Empty day directories are removed so the tree doesn't grow without bound.
                camera, day = rel_dir.split("/")
                with contextlib.suppress(OSError):
                    cfd = layout.open_dirs(self.root, [camera])
                    try:
                        os.rmdir(day, dir_fd=cfd)
                    finally:
                        os.close(cfd)

    def close(self) -> None:
        # A clip cut by a full disk whose `partial` could not be recorded yet gets a last try here,
        # so a clean stop never leaves a row `recording` (the index reuses its WAL space for it).
        self.settle()
        if self._unsettled:
            log.error("index: %d clip(s) still marked recording; the next start marks them partial",
                      len(self._unsettled))
        self.manifest.close()
        self.index.close()


def _nearly_full(root: Path) -> bool:
    try:
        return shutil.disk_usage(root).free < 256 * 1024
    except OSError:
        return False


def _has_payload(root: Path, rel: str) -> bool | None:
    """True if an age file got past its header: there is at least something to salvage. None if
    it is not a regular file reached without links (never opened then: a FIFO would block)."""
    try:
        fd = layout.open_regular(root, rel)
    except layout.UnsafePath:
        return None
    except OSError:
        return False
    try:
        head = os.pread(fd, 4096, 0)
        size = os.fstat(fd).st_size
    except OSError:
        return False
    finally:
        os.close(fd)
    end = head.find(b"\n--- ")
    if end < 0:
        return False
    mac_line_end = head.find(b"\n", end + 1)
    return mac_line_end >= 0 and size > mac_line_end + 1 + 16


class OpenClip:
    """A clip being written: an AgeWriter over an O_EXCL file, checkpointed into the index."""

    def __init__(self, store: Store, camera: str, start: float, rel: str, fd: int) -> None:
        self.store = store
        self.camera = camera
        self.start = start
        self.rel = rel
        self.path = store.root / rel
        self.end = start
        self.failed = False
        try:
            self._file = os.fdopen(fd, "wb", buffering=0)
        except BaseException:
            os.close(fd)
            self._abandon()
            raise
        # Anything that fails before the index row exists (a full disk, a recipient the age writer
        # rejects, an index that can't be written) must leave neither an open descriptor nor an
        # empty clip file behind: a recorder retrying every few seconds would pile them up.
        try:
            self._age = AgeWriter(self._file, store.recipients)
            os.fsync(fd)
            fsync_dir(self.path.parent)
            self.id = store.index.insert(camera, start, rel, self._age.bytes_written)
        except OSError as exc:
            self._abandon()
            raise _storage_error("write", self.path, exc) from None
        except BaseException:
            self._abandon()
            raise
        self._last_sync = store.clock.monotonic()

    def write(self, data: bytes, end: float) -> None:
        """Adds container bytes; `end` is the UTC time the clip covers once they are written."""
        try:
            self._age.write(data)
            self.end = max(self.end, end)
            if self.store.clock.monotonic() - self._last_sync >= self.store.fsync_interval:
                self.sync()
        except OSError as exc:
            self.failed = True
            raise _storage_error("write", self.path, exc) from None

    def sync(self) -> None:
        """Makes what was written durable, then lets the index say so (invariant I2)."""
        os.fsync(self._file.fileno())
        self._last_sync = self.store.clock.monotonic()
        self.store.index.update(self.id, end=self.end, size=self._age.bytes_written)
        # A statvfs per second: below the free-space floor, retention runs now, not at its next turn.
        with contextlib.suppress(OSError):
            if shutil.disk_usage(self.store.root).free < self.store.min_free:
                self.store.wants_housekeeping.set()

    def close(self, end: float, thumbnail: bytes | None = None, details: bytes | None = None) -> ClipRow:
        """Writes the final chunk and the sidecars, then marks the clip complete (invariant I3)."""
        self.end = max(self.end, end)
        if self.failed:  # an earlier write failed: the age writer refuses to finish a broken stream
            self.abort()
            raise StorageError(f"cannot finish {self.path}: an earlier write failed")
        try:
            self._age.close()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.failed = True
            self.abort()
            raise _storage_error("finish", self.path, exc) from None
        finally:
            self._file.close()
        size = self._age.bytes_written
        fields: dict[str, object] = {}
        for suffix, payload, key in ((layout.THUMB_SUFFIX, thumbnail, "thumb"), (layout.META_SUFFIX, details, "meta")):
            if payload is None:
                continue
            try:
                rel, n = self.store.write_sidecar(self.rel, suffix, payload)
            except StorageError as exc:  # a missing thumbnail must not cost the clip itself
                log.warning("%s: %s", self.camera, exc.message)
                continue
            fields[key] = rel
            size += n
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.store.mark_partial(self.id, self._age.bytes_written, self.end)
            raise _storage_error("finish", self.path, exc) from None
        try:  # manifest before index (rule M1): a `complete` row always has its manifest entry
            self.store.manifest.record_closed(self.camera, self.rel, start=self.start, end=self.end,
                                              files=[self.rel, *(str(v) for v in fields.values())])
        except StorageError as exc:  # the clip itself is fine; the next start-up records it
            log.error("%s: manifest: %s", self.camera, exc.message)
        # On a full disk even this may wait for space (the files and the manifest entry are done).
        self.store.settle_later(self.id, state="complete", end=self.end, size=size, **fields)
        return ClipRow(self.id, self.camera, self.start, self.end, size, self.rel,
                       fields.get("thumb"), fields.get("meta"), "complete")  # type: ignore[arg-type]

    def abort(self) -> None:
        """The clip can't be finished (disk error): keep what is durable, as a salvageable partial clip."""
        with contextlib.suppress(OSError, ValueError):
            os.fsync(self._file.fileno())
        with contextlib.suppress(OSError):
            self._file.close()
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        self.store.mark_partial(self.id, size, self.end)
        with contextlib.suppress(StorageError):
            self.store.manifest.record_closed(self.camera, self.rel, start=self.start, end=self.end, kind="partial")

    def _abandon(self) -> None:
        if hasattr(self, "_file"):
            with contextlib.suppress(OSError):
                self._file.close()
        # Also removes the day directory if this file was its first.
        with contextlib.suppress(OSError):
            self.store._unlink_files([self.rel])
