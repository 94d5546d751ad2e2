"""The job store: background jobs, their step results and log lines in one SQLite file.

A job has a kind: `explore` (an exploration), `baseline` (prepare and measure a base model) or
`export` (apply a chain and write the compressed model); `ordercomp.jobs.kinds` says what each runs.

The dashboard, its worker processes and the CLI read and write the same file at once, so every
call opens its own connection (safe from Streamlit's threads and from several processes), the
database runs in WAL mode (readers never block the writer) and a busy timeout waits out locks.
Step results of all jobs share one cache folder next to the file, so identical work is reused.
A file is used only when it is ordercomp's (its application id, or an older store's exact tables) and
undamaged; anything else is one StoreError line and the file is left as it was, and so is an SQLite
error in any later call.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # the store itself needs no torch: dashboard pages that only list jobs load fast
    from ..exploration.explorer import ExploreSpec
    from .specs import BaselineSpec, ExportSpec

DEFAULT_PATH = ".ordercomp/jobs.sqlite"
BUSY_TIMEOUT_S = 30.0
STATUSES = ("queued", "running", "cancelling", "cancelled", "failed", "done")
ACTIVE = ("queued", "running", "cancelling")
KINDS = ("explore", "baseline", "export")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'explore',
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{status}'" for status in STATUSES)})),
    error TEXT,
    pid INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    label TEXT NOT NULL DEFAULT '',
    fraction REAL NOT NULL DEFAULT 0,
    result TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    chain TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    metrics TEXT,
    seconds REAL NOT NULL,
    UNIQUE (job_id, chain, seed)
);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    time REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_job ON log (job_id, id);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
SCHEMA_VERSION = 3  # 2: settings table; 3: application_id set
APPLICATION_ID = 0x4F524443  # "ORDC" in the file header: a store ordercomp created (stores before version 3 have 0)

# Every column but the result: a job list stays light however big the explorations are.
SUMMARY_COLUMNS = "id, kind, spec, status, error, pid, created, updated, done, total, label, fraction"


def default_path() -> Path:
    return Path(os.environ.get("ORDERCOMP_STORE") or DEFAULT_PATH)


class StoreError(ValueError):
    """The job store cannot be opened or written; the message says what to do."""


class JobStore:
    """Jobs, step rows and log lines in the SQLite file at `path` (created with its folder).

    Opening checks the file before changing anything: another program's SQLite database is refused and
    left as it was, a damaged one is refused; an SQLite error in any later call is a StoreError too."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path or default_path()).expanduser().resolve()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._open()
            try:
                self._check(connection)
                connection.execute("PRAGMA journal_mode=WAL")
                _add_kind_column(connection)
                # One transaction, so another process opening the store meanwhile sees it before or after, never
                # half made; and a write every store needs anyway: a read-only file is found here, not halfway through a job.
                connection.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
                                         f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            finally:
                connection.close()
        except (sqlite3.Error, OSError) as error:
            raise self._unusable(error) from None

    def _check(self, connection: sqlite3.Connection) -> None:
        """Refuse, reading only, another program's database, another version's store or a damaged store."""
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if application_id == APPLICATION_ID and version != SCHEMA_VERSION:
            raise StoreError(f"the job store {self.path} was written by another ordercomp version (schema {version}, this one uses "
                             f"{SCHEMA_VERSION}): open it with that version, or set ORDERCOMP_STORE to a new path; the file was left as it was")
        foreign = _foreign(connection, application_id)
        if foreign:
            raise StoreError(f"the job store {self.path} is not an ordercomp job store ({foreign}): set ORDERCOMP_STORE to a "
                             "new path; the file was left as it was")
        problem = connection.execute("PRAGMA quick_check(1)").fetchone()[0]  # damaged pages behind a valid header
        if problem != "ok":
            raise StoreError(f"the job store {self.path} is damaged ({' '.join(problem.split())}): set ORDERCOMP_STORE to a new "
                             "path, or restore the file from a backup; the file was left as it was")

    def _unusable(self, error: Exception) -> StoreError:
        return StoreError(f"the job store {self.path} cannot be used ({str(error).splitlines()[0]}): make it a writable "
                          "SQLite file, or set ORDERCOMP_STORE to a new path")

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.row_factory = sqlite3.Row
        return connection

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A fresh connection inside one transaction, committed on success and rolled back on error.

        A write transaction takes the write lock at once (BEGIN IMMEDIATE), so a status read and
        the update that depends on it cannot interleave with another process's. Any SQLite error
        (a file damaged since it was opened, a lock held too long) becomes one StoreError line.
        """
        try:
            connection = self._open()
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield connection
                connection.execute("COMMIT")
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                connection.close()
        except sqlite3.Error as error:
            raise self._unusable(error) from None

    def cache_dir(self) -> Path:
        """The step cache shared by every job of this store."""
        return self.path.parent / "cache"

    def create(self, spec: ExploreSpec | BaselineSpec | ExportSpec, kind: str = "explore") -> str:
        """A new queued job of `kind` for `spec`; returns its id (12 random hex digits)."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
        job_id, now = secrets.token_hex(6), time.time()
        with self._connect(write=True) as connection:
            connection.execute("INSERT INTO jobs (id, kind, spec, status, created, updated) VALUES (?, ?, ?, 'queued', ?, ?)",
                               (job_id, kind, json.dumps(spec.to_dict()), now, now))
        return job_id

    def get(self, job_id: str) -> dict | None:
        """The job with its spec and result parsed, or None when there is no such job."""
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job_record(row)

    def require(self, job_id: str) -> dict:
        """The job, or a ValueError saying that the id is unknown."""
        job = self.get(job_id)
        if job is None:
            raise unknown_job(job_id)
        return job

    def list_jobs(self, kind: str | None = None) -> list[dict]:
        """Every job (of `kind` when given), newest first, without its result (read one with `get`)."""
        where, parameters = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        with self._connect() as connection:
            rows = connection.execute(f"SELECT {SUMMARY_COLUMNS} FROM jobs {where} ORDER BY created DESC, rowid DESC",
                                      parameters).fetchall()
        return [_job_record(row) for row in rows]

    def step_seconds(self, model: str | None = None, data: str | None = None, recent: int = 200) -> tuple[float, int] | None:
        """(mean seconds, how many) of the last `recent` successful method applications of explorations (of that
        model and data when given), or None when there are none: the basis of time estimates measured here."""
        query = ("SELECT AVG(seconds), COUNT(seconds) FROM (SELECT steps.seconds FROM steps JOIN jobs ON jobs.id = steps.job_id "
                 "WHERE steps.status = 'ok' AND jobs.kind = 'explore' "
                 "AND (? IS NULL OR json_extract(jobs.spec, '$.model') = ?) AND (? IS NULL OR json_extract(jobs.spec, '$.data') = ?) "
                 "ORDER BY steps.rowid DESC LIMIT ?)")
        with self._connect() as connection:
            mean, count = connection.execute(query, (model, model, data, data, recent)).fetchone()
        return (mean, count) if count else None

    def steps(self, job_id: str) -> list[dict]:
        """The finished method applications of a job, in the order they were first recorded."""
        with self._connect() as connection:
            self._require_in(connection, job_id)
            rows = connection.execute("SELECT * FROM steps WHERE job_id = ? ORDER BY rowid", (job_id,)).fetchall()
        return [_step_record(row) for row in rows]

    def log(self, job_id: str, limit: int = 200) -> list[dict]:
        """The last `limit` log lines of a job, oldest first."""
        with self._connect() as connection:
            self._require_in(connection, job_id)
            rows = connection.execute("SELECT time, message FROM log WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                                      (job_id, limit)).fetchall()
        return [dict(row) for row in reversed(rows)]

    def append_log(self, job_id: str, message: str) -> None:
        with self._connect(write=True) as connection:
            self._require_in(connection, job_id)
            connection.execute("INSERT INTO log (job_id, time, message) VALUES (?, ?, ?)", (job_id, time.time(), message))

    def record_step(self, job_id: str, step: dict) -> None:
        """Store a StepResult dict; a step that is recorded again (a resumed job) replaces its row."""
        with self._connect(write=True) as connection:
            self._require_in(connection, job_id)
            connection.execute(
                "INSERT INTO steps (job_id, chain, seed, status, reason, metrics, seconds) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, chain, seed) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
                "metrics = excluded.metrics, seconds = excluded.seconds",
                (job_id, json.dumps(list(step["chain"])), step["seed"], step["status"], step["reason"],
                 json.dumps(step["metrics"]), step["seconds"]))

    def set_progress(self, job_id: str, label: str, fraction: float, done: int | None = None, total: int | None = None) -> None:
        """What the job is doing now; `done`/`total` count finished method applications when given."""
        with self._connect(write=True) as connection:
            self._require_in(connection, job_id)
            connection.execute(
                "UPDATE jobs SET label = ?, fraction = ?, done = COALESCE(?, done), total = COALESCE(?, total), updated = ? "
                "WHERE id = ?", (label, fraction, done, total, time.time(), job_id))

    def set_status(self, job_id: str, status: str, *, error: str | None = None, result: dict | None = None,
                   pid: int | None = None, expect: tuple[str, ...] | None = None) -> bool:
        """Move a job to `status` (with its error, result or worker pid when given).

        With `expect`, only a job currently in one of those statuses moves; returns whether it did,
        so two processes racing on one job cannot both win.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown job status {status!r}: use one of {', '.join(STATUSES)}")
        with self._connect(write=True) as connection:
            current = self._require_in(connection, job_id)["status"]
            if expect is not None and current not in expect:
                return False
            connection.execute(
                "UPDATE jobs SET status = ?, error = ?, result = COALESCE(?, result), pid = COALESCE(?, pid), updated = ? "
                "WHERE id = ?", (status, error, None if result is None else json.dumps(result), pid, time.time(), job_id))
        return True

    def requeue(self, job_id: str) -> None:
        """Put a failed or cancelled job back in the queue, forgetting its error and old worker."""
        with self._connect(write=True) as connection:
            status = self._require_in(connection, job_id)["status"]
            if status not in ("failed", "cancelled"):
                raise ValueError(f"job {job_id} is {status}: only failed or cancelled jobs can be resumed")
            connection.execute("UPDATE jobs SET status = 'queued', error = NULL, pid = NULL, updated = ? WHERE id = ?",
                               (time.time(), job_id))

    def request_cancel(self, job_id: str) -> str:
        """Cancel a job that waits in the queue at once; ask the worker of a starting or running job to
        stop (it marks the job cancelled when it does). Returns the job's new status."""
        with self._connect(write=True) as connection:
            row = self._require_in(connection, job_id)
            if row["status"] not in ACTIVE:
                raise ValueError(f"job {job_id} is {row['status']}: only queued or running jobs can be cancelled")
            status = "cancelled" if row["status"] == "queued" and row["pid"] is None else "cancelling"
            connection.execute("UPDATE jobs SET status = ?, updated = ? WHERE id = ?", (status, time.time(), job_id))
            if status == "cancelled":
                connection.execute("INSERT INTO log (job_id, time, message) VALUES (?, ?, ?)",
                                   (job_id, time.time(), "cancelled while waiting in the queue"))
        return status

    def setting(self, name: str) -> str | None:
        """A store-wide setting (e.g. `max_workers`), or None when it was never set."""
        with self._connect() as connection:
            row = connection.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row["value"]

    def set_setting(self, name: str, value: str | None) -> None:
        """Set a store-wide setting for every process using this store; None removes it."""
        with self._connect(write=True) as connection:
            if value is None:
                connection.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                connection.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                                   "value = excluded.value", (name, str(value)))

    @staticmethod
    def _require_in(connection: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = connection.execute("SELECT status, pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise unknown_job(job_id)
        return row


def _foreign(connection: sqlite3.Connection, application_id: int) -> str | None:
    """Why the open database is not an ordercomp job store, or None: it carries ordercomp's application id,
    or (as older stores did, with id 0) holds only tables and indexes of ordercomp's schema, column for column."""
    if application_id not in (0, APPLICATION_ID):
        return f"its application id is {application_id:#x}"
    if application_id == APPLICATION_ID:
        return None
    ours, shape = _shape_of(SCHEMA), _shape(connection)
    before_kinds = frozenset(column for column in ours["jobs"] if column[0] != "kind")  # stores older than job kinds
    others = sorted(set(shape) - set(ours))
    if others:
        return f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, which ordercomp never made"
    if any(shape[name] != ours[name] and not (name == "jobs" and shape[name] == before_kinds) for name in shape):
        return "its tables have other columns"
    return None


Shape = dict[str, frozenset]


def _shape(connection: sqlite3.Connection) -> Shape:
    """Every table and index of the database, with the columns of each table (whatever their order)."""
    objects = connection.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {name: frozenset(tuple(column)[1:] for column in connection.execute(f"PRAGMA table_info({_quoted(name)})"))
            if kind == "table" else frozenset({kind}) for kind, name in objects}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shape_of(schema: str) -> Shape:
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(schema)
        return _shape(connection)
    finally:
        connection.close()


def _add_kind_column(connection: sqlite3.Connection) -> None:
    """Stores written before job kinds existed hold explorations only."""
    columns = {row["name"] for row in connection.execute("PRAGMA table_info(jobs)")}
    if columns and "kind" not in columns:
        try:
            connection.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'explore'")
        except sqlite3.OperationalError as error:  # another process added it a moment ago
            if "duplicate column" not in str(error):
                raise


def unknown_job(job_id: str) -> ValueError:
    return ValueError(f"unknown job {job_id!r}: pick an id from the job list")


def _job_record(row: sqlite3.Row) -> dict:
    record = dict(row)
    record["spec"] = json.loads(record["spec"])
    if "result" in record:
        record["result"] = None if record["result"] is None else json.loads(record["result"])
    return record


def _step_record(row: sqlite3.Row) -> dict:
    record = dict(row)
    record["chain"] = json.loads(record["chain"])
    record["metrics"] = json.loads(record["metrics"])
    return record
