"""Where a comparison's trials are stored: an Optuna journal file on one machine, a database across machines.

:func:`open_storage` takes a journal file path or a database URL and returns an Optuna storage, with three
guarantees the bare storages do not give:

* **A cut journal is repaired, never appended to.** A crash or a full disk in the middle of an append can leave the
  journal's last record without its newline. Optuna still reads such a file (it skips the fragment), but the next
  append would glue a new record onto the fragment, and from then on no reader gets past that line. Before writing,
  the journal's tail is checked under the journal's own lock and cut back to its last complete record, with a
  warning naming the file and the bytes removed (they were never readable). A journal already damaged that way is
  refused with the command that repairs it (:func:`repair_journal`).
* **A database that drops for a few seconds is retried.** Every storage call is retried on connection errors for
  up to ``retry_seconds`` (a restart of PostgreSQL takes a few seconds); after that a :class:`StorageError` says in
  one line which storage was lost and for how long.
* **Clear errors.** An unknown URL scheme, a folder given as a file, a read-only file or folder and an unreachable
  server are :class:`StorageError` messages that name the storage (passwords redacted).

Example:
    >>> from adaptive_focal.compare.storage import default_storage, is_url, redact
    >>> default_storage("demo"), is_url("runs/sweeps/demo.log"), is_url("sqlite:///demo.db")
    ('runs/sweeps/demo.log', False, True)
    >>> redact("postgresql://alice:s3cret@db.example.org/sweeps")
    'postgresql://alice:***@db.example.org/sweeps'
"""

from __future__ import annotations

import errno
import json
import os
import time
import warnings
from pathlib import Path

from ..integrations._optional import require

optuna = require("optuna", "compare", "adaptive_focal.compare")
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage  # noqa: E402

__all__ = ["StorageError", "default_storage", "is_url", "open_storage", "redact", "repair_journal"]

#: database URL schemes accepted (SQLAlchemy dialects Optuna's RDBStorage supports)
URL_SCHEMES = ("postgresql", "mysql", "sqlite")


class StorageError(RuntimeError):
    """The storage cannot be opened, written or reached."""


def default_storage(study_name: str, root: str | os.PathLike = "runs/sweeps") -> str:
    """The default journal file of a study: ``<root>/<study>.log``."""
    return str(Path(root) / f"{study_name}.log")


def is_url(storage: str) -> bool:
    return "://" in str(storage)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = str(url).partition("://")
    if "@" in tail:
        cred, _, host = tail.rpartition("@")
        tail = f"{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else f"{cred}@{host}"
    return f"{head}{sep}{tail}"


# ----------------------------------------------------------------------------------------------------------
# journal files
# ----------------------------------------------------------------------------------------------------------
def _journal_lock(path: Path):
    return JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes by default for its appends


def _first_bad_line(path: Path) -> int | None:
    """The number (from 1) of the first complete line of the journal that is not a JSON record, or None."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                return None
            try:
                json.loads(line)
            except ValueError:
                return number
    return None


def _damaged(path: Path, err: Exception) -> StorageError:
    line = _first_bad_line(path)
    where = f" at line {line}" if line else ""
    return StorageError(f"journal {str(path)!r} is damaged{where} ({err}): a record cut by a crash or a full disk "
                        "had later records appended to it, and Optuna cannot read past it. Repair it with "
                        f"`adaptive-focal storage repair {path}` (the original is kept as {path.name}.damaged)")


def _cut_tail(path: Path) -> int:
    """Cuts an unterminated last record off the journal (under its lock); returns the bytes removed."""
    lock = _journal_lock(path)
    lock.acquire()
    try:
        size = path.stat().st_size
        if size == 0:
            return 0
        with path.open("rb+") as fh:
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return 0
            keep, block = 0, 1 << 16
            pos = size
            while pos > 0:  # find the last newline, reading backwards
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    keep = start + i + 1
                    break
                pos = start
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep
    finally:
        lock.release()


def repair_journal(path) -> dict:
    """Repairs a journal file damaged by a cut record: keeps every record that is readable and, on a line where a
    cut fragment has a complete record glued after it, that record. The original is kept as
    ``<file>.damaged``. Returns ``{"records": kept, "fragments": removed, "bytes_removed": n}``."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"no journal file {str(path)!r}")
    lock = _journal_lock(path)
    lock.acquire()
    try:
        raw = path.read_bytes()
        kept, fragments = [], 0
        for line in raw.split(b"\n"):
            if not line:
                continue
            try:
                json.loads(line)
                kept.append(line)
                continue
            except ValueError:
                pass
            # a fragment with a record glued after it: the record starts at the last '{"op_code"'
            start = line.rfind(b'{"op_code"')
            if start > 0:
                try:
                    json.loads(line[start:])
                    kept.append(line[start:])
                except ValueError:
                    pass
            fragments += 1
        out = b"".join(rec + b"\n" for rec in kept)
        backup = path.with_name(path.name + ".damaged")
        backup.write_bytes(raw)
        tmp = path.with_name(path.name + ".repairing")
        tmp.write_bytes(out)
        os.replace(tmp, path)
    finally:
        lock.release()
    return {"records": len(kept), "fragments": fragments, "bytes_removed": len(raw) - len(out)}


def _writable_or_raise(path: Path) -> None:
    folder = path.parent
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StorageError(f"storage file {str(path)!r} is read-only; runs need to write to it (make it "
                               "writable, or copy it to a writable place and pass --storage)")
        if not os.access(folder, os.W_OK):
            raise StorageError(f"the folder of storage file {str(path)!r} is read-only; the journal's lock file "
                               "is created there (copy the journal to a writable folder and pass --storage)")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create the folder of storage file {str(path)!r}: {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise StorageError(f"cannot create storage file {str(path)!r}: its folder is read-only (pass --storage "
                           "with a writable path)")


def _open_journal(path: Path, *, write: bool):
    if path.exists() and path.is_dir():
        raise StorageError(f"storage {str(path)!r} is a folder; give a journal file path such as "
                           f"{str(path / 'study.log')!r} or a database URL")
    if not write:
        if not path.is_file():
            raise StorageError(f"no storage file {str(path)!r}")
        backend = _ReadOnlyBackend(str(path))
    else:
        _writable_or_raise(path)
        if path.exists():
            removed = _cut_tail(path)
            if removed:
                warnings.warn(f"journal {str(path)!r}: removed a cut last record ({removed} bytes, never readable: "
                              "a crash or a full disk interrupted its append) before writing", RuntimeWarning,
                              stacklevel=4)
        backend = JournalFileBackend(str(path))
    try:
        return JournalStorage(backend)
    except ValueError as err:  # json.JSONDecodeError / "Invalid log format." from the replay
        raise _damaged(path, err) from None


class _ReadOnlyBackend(JournalFileBackend):
    """A journal backend that reads its file and never creates, locks or writes it (for reports)."""

    def __init__(self, file_path: str) -> None:  # the base class would create the file
        self._file_path = file_path
        self._lock = None
        self._log_number_offset = {0: 0}

    def append_logs(self, logs) -> None:
        raise StorageError(f"storage {self._file_path!r} was opened for reading only")


# ----------------------------------------------------------------------------------------------------------
# databases
# ----------------------------------------------------------------------------------------------------------
_TRANSIENT = ("OperationalError", "InterfaceError", "DisconnectionError")


def _transient(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a lost database connection, worth retrying."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        mod = type(err).__module__ or ""
        if type(err).__name__ in _TRANSIENT and (mod.startswith("sqlalchemy") or mod.startswith("psycopg")):
            return True
        if getattr(err, "connection_invalidated", False):
            return True
        err = err.__cause__ or err.__context__
    return False


def _first_line(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class RetryingStorage(optuna.storages.BaseStorage):
    """Forwards every call to ``inner``, retrying calls that fail on a lost connection for up to ``retry_seconds``
    (backing off from 0.1 s to 2 s); then raises :class:`StorageError`."""

    def __init__(self, inner, name: str, retry_seconds: float = 60.0) -> None:
        self._inner = inner
        self._name = name
        self.retry_seconds = float(retry_seconds)

    def _call(self, method: str, *args, **kwargs):
        deadline, pause = None, 0.1
        while True:
            try:
                return getattr(self._inner, method)(*args, **kwargs)
            except Exception as err:
                if not _transient(err):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.retry_seconds
                if now >= deadline:
                    raise StorageError(f"lost the connection to storage {self._name} and could not reconnect within "
                                       f"{self.retry_seconds:g} s: {_first_line(err)}") from err
                time.sleep(min(pause, max(0.0, deadline - now)))
                pause = min(2 * pause, 2.0)

    def remove_session(self) -> None:
        if hasattr(self._inner, "remove_session"):
            self._inner.remove_session()

    def __getstate__(self):
        raise TypeError("a storage is not sent to other processes; they open it again from its URL")


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted(optuna.storages.BaseStorage.__abstractmethods__):
    setattr(RetryingStorage, _name, _forward(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def _open_database(url: str, *, connect_timeout: int, workers: int, retry_seconds: float, retry_open: bool):
    dialect = url.split("://", 1)[0].split("+", 1)[0]
    if dialect not in URL_SCHEMES:
        raise StorageError(f"storage URL scheme must be one of {', '.join(URL_SCHEMES)} (or a journal file path), "
                           f"got {redact(url)!r}")
    if dialect == "sqlite" and workers > 1:
        raise StorageError("SQLite is not for parallel workers; use the journal file storage (a path) on one "
                           "machine or PostgreSQL across machines")
    connect_args, shown = {}, redact(url)
    if dialect == "postgresql":
        if url.startswith("postgresql://"):  # psycopg (3), which SQLAlchemy >= 2.1 picks anyway
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        connect_args = {"connect_timeout": int(connect_timeout)}
    elif dialect == "mysql":
        connect_args = {"connect_timeout": int(connect_timeout)}
    deadline = time.monotonic() + (retry_seconds if retry_open else 0.0)
    while True:
        try:
            rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args,
                                                                 "pool_pre_ping": True})
            break
        except Exception as err:  # sqlalchemy's OperationalError and friends; the message names the cause
            if _transient(err) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            first = _first_line(err)
            if isinstance(err, ImportError) or "Failed to import DB access module" in first:
                first += " (the driver for this URL is missing: pip install 'adaptive_focal[postgres]')"
            elif "readonly" in first.lower() or "read-only" in first.lower():
                first += " (the database is read-only)"
            tried = f" (retried for {retry_seconds:g} s)" if retry_open else ""
            raise StorageError(f"cannot open storage {shown!r}{tried}: {first}") from err
    return RetryingStorage(optuna.storages.get_storage(rdb), shown, retry_seconds)


# ----------------------------------------------------------------------------------------------------------
def open_storage(storage: str, *, connect_timeout: int = 5, workers: int = 1, write: bool = True,
                 retry_seconds: float = 60.0, retry_open: bool = False):
    """An Optuna storage for ``storage``: a database for ``dialect://...`` URLs (postgresql, mysql, sqlite), else
    a journal file at that path (created with its folder when ``write``).

    Args:
        storage: a journal file path or a database URL.
        connect_timeout: seconds before an unreachable database is a :class:`StorageError`.
        workers: the number of parallel workers that will share it (SQLite is refused for more than one).
        write: False opens a journal file for reading only (a report): nothing is created or repaired.
        retry_seconds: how long calls to a database are retried after its connection drops.
        retry_open: also retry opening the database for ``retry_seconds`` (workers joining a study whose database
            was reachable a moment ago); otherwise an unreachable database fails within ``connect_timeout``.
    """
    if isinstance(storage, os.PathLike):
        storage = str(storage)
    if not isinstance(storage, str) or not storage:
        raise StorageError(f"storage must be a database URL or a journal file path, got {storage!r}")
    if is_url(storage):
        return _open_database(storage, connect_timeout=connect_timeout, workers=workers,
                              retry_seconds=retry_seconds, retry_open=retry_open)
    try:
        return _open_journal(Path(storage), write=write)
    except PermissionError as err:
        raise StorageError(f"storage file {storage!r}: {err.strerror}") from None
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES):
            raise StorageError(f"storage file {storage!r} is on a read-only file system") from None
        raise
