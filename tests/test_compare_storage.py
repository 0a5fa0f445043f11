"""adaptive_focal.compare.storage: a cut journal is repaired before anything is appended, a damaged one is refused
with the command that repairs it, read-only storage is a clear error, and a database that drops is retried."""

import contextlib
import os
import shutil
import stat
import subprocess
import warnings

import pytest

optuna = pytest.importorskip("optuna")

from adaptive_focal import cli  # noqa: E402
from adaptive_focal.compare import storage as st  # noqa: E402
from adaptive_focal.compare.results import load_units  # noqa: E402
from adaptive_focal.compare.runner import run  # noqa: E402
from helpers.studies import linear_study, opts  # noqa: E402


def _complete(path, name):
    s = st.open_storage(str(path), write=False)
    units = load_units(s, name)
    return sorted((arm, seed, t["number"]) for arm, per in units["units"].items() for seed, ts in per.items()
                  for t in ts if t["state"] == "COMPLETE")


def test_a_cut_last_record_is_removed_before_the_rerun_appends(tmp_path):
    """Defect 1: a crash mid-append left a record without its newline; the rerun the README recommends used to
    append onto it and make the whole journal unreadable."""
    log = tmp_path / "cut.log"
    study = linear_study(arms=("gamma=0", "gamma=2"), seeds=2)
    run(study, opts(log))
    before = _complete(log, study.name)
    size = log.stat().st_size
    with log.open("ab") as fh:  # what a crash in the middle of an append leaves behind
        fh.write(b'{"op_code":5,"worker_id":"abc","trial_id":3,"us')
    assert _complete(log, study.name) == before  # Optuna still reads it (the fragment is skipped)
    with pytest.warns(RuntimeWarning, match=f"journal '{log}': removed a cut last record \\(47 bytes"):
        run(study.replace(seeds=3), opts(log, seeds=3))
    after = _complete(log, study.name)
    assert set(before) < set(after) and len(after) == 6  # nothing lost, the new seed's trials added
    assert log.stat().st_size > size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean journal opens without a warning
        st.open_storage(str(log))


def test_a_damaged_journal_is_refused_with_the_repair_command_and_repair_recovers_it(tmp_path, capsys):
    log = tmp_path / "damaged.log"
    study = linear_study(arms=("gamma=0", "gamma=2"), seeds=2)
    run(study, opts(log))
    before = _complete(log, study.name)
    lines = log.read_bytes().splitlines(keepends=True)
    # what the old runner produced: a fragment with the next run's records appended to it
    damaged = b"".join(lines[:-3]) + lines[-3][:20] + b"".join(lines[-3:])
    log.write_bytes(damaged)
    with pytest.raises(st.StorageError, match=f"journal '{log}' is damaged at line {len(lines) - 2}.*"
                                               f"adaptive-focal storage repair {log}"):
        st.open_storage(str(log))
    assert log.read_bytes() == damaged  # refused, untouched
    assert cli.main(["storage", "repair", str(log)]) == 0
    assert "removed 1 cut fragment(s) (20 bytes)" in capsys.readouterr().out
    assert (tmp_path / "damaged.log.damaged").read_bytes() == damaged
    assert _complete(log, study.name) == before  # every record, the one glued to the fragment included


@contextlib.contextmanager
def _read_only(*paths):
    """Makes ``paths`` read-only for this process: permission bits, and for root (whom they do not stop) the
    immutable attribute (``chattr +i``); skips the test where neither works."""
    for p in paths:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR if p.is_dir() else stat.S_IRUSR)
    immutable = []
    try:
        for p in paths:
            if os.access(p, os.W_OK):
                chattr = shutil.which("chattr")
                if not chattr or subprocess.run([chattr, "+i", str(p)], capture_output=True).returncode:
                    pytest.skip("cannot make a file read-only for this user (root without chattr +i)")
                immutable.append(p)
        yield
    finally:
        for p in immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(p)], capture_output=True)
        for p in paths:
            p.chmod(stat.S_IRWXU)


def test_read_only_storage_is_a_clear_error_and_still_reads(tmp_path):
    """Defect 12: read-only storage gave a raw traceback."""
    log = tmp_path / "ro" / "study.log"
    study = linear_study(arms=("gamma=0",), seeds=1)
    run(study, opts(log))
    with _read_only(log):
        with pytest.raises(st.StorageError, match="is read-only; runs need to write to it"):
            run(study, opts(log))
        assert len(_complete(log, study.name)) == 1  # a report still reads it
    with _read_only(log.parent):
        with pytest.raises(st.StorageError, match="folder of storage file .* is read-only"):
            run(study, opts(log))
        assert len(_complete(log, study.name)) == 1


def test_read_only_folder_for_a_new_journal(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    with _read_only(folder):
        with pytest.raises(st.StorageError, match="its folder is read-only"):
            st.open_storage(str(folder / "new.log"))


def test_opening_for_reading_creates_nothing(tmp_path):
    with pytest.raises(st.StorageError, match="no storage file"):
        st.open_storage(str(tmp_path / "none.log"), write=False)
    assert not (tmp_path / "none.log").exists()


class _Flaky(optuna.storages.InMemoryStorage):
    """An in-memory storage whose calls fail with a lost connection ``failures`` times in a row."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    def get_all_studies(self):
        if self.failures:
            self.failures -= 1
            import sqlalchemy.exc

            try:
                raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            except sqlalchemy.exc.OperationalError as err:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err
        return super().get_all_studies()


def test_a_dropped_connection_is_retried_then_a_clear_error():
    """Defect 6: a database restart of a few seconds killed every worker with hundreds of lines ending in a
    misleading 'invalid data in the commit'."""
    pytest.importorskip("sqlalchemy")
    flaky = st.RetryingStorage(_Flaky(failures=3), "postgresql://x@db/s", retry_seconds=30)
    assert flaky.get_all_studies() == []  # three failures, then the call goes through
    down = st.RetryingStorage(_Flaky(failures=10 ** 6), "postgresql://x@db/s", retry_seconds=0.3)
    with pytest.raises(st.StorageError, match="lost the connection to storage postgresql://x@db/s and could not "
                                              "reconnect within 0.3 s: .*server closed the connection"):
        down.get_all_studies()


def test_other_errors_are_not_retried():
    class Broken(optuna.storages.InMemoryStorage):
        calls = 0

        def get_all_studies(self):
            Broken.calls += 1
            raise KeyError("not a connection problem")

    with pytest.raises(KeyError):
        st.RetryingStorage(Broken(), "x", retry_seconds=30).get_all_studies()
    assert Broken.calls == 1


def test_an_unreachable_database_fails_fast():
    pytest.importorskip("psycopg")
    import socket
    import time

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(st.StorageError, match=f"cannot open storage 'postgresql://nobody:\\*\\*\\*@127.0.0.1:{port}/db'"):
        st.open_storage(f"postgresql://nobody:secret@127.0.0.1:{port}/db", connect_timeout=2)
    assert time.perf_counter() - start < 30  # within about connect_timeout, not the retry budget


def test_bad_storage_arguments():
    with pytest.raises(st.StorageError, match="scheme must be one of postgresql, mysql, sqlite"):
        st.open_storage("redis://localhost/0")
    with pytest.raises(st.StorageError, match="SQLite is not for parallel workers"):
        st.open_storage("sqlite:////tmp/x.db", workers=2)
    with pytest.raises(st.StorageError, match="must be a database URL or a journal file path, got ''"):
        st.open_storage("")
    assert st.redact("postgresql://me:secret@host/db") == "postgresql://me:***@host/db"
