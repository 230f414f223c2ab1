"""The persistent job queue of ``tseg-rt serve`` / ``watch``: SQLite in the results folder.

``OUT/.tseg-service/jobs.sqlite3`` (hidden, so neither folder search nor the cohort report take it
for a slide or a result), in WAL mode, its schema versioned with ``PRAGMA user_version`` and
migrated forward on open (a database from a newer tseg-rt is refused with a clear error).

Job states follow Orthanc's jobs engine: ``pending`` -> ``running`` -> ``success`` | ``failure``
| ``cancelled``; a failure carries an error code and message. Every change of state is one
transaction, so a killed process leaves each job in exactly one state, and the result files
themselves are renamed into place before a job becomes ``success`` (see
:func:`tseg.runtime.cohort.runner.process_slide`): a job is never ``success`` without its result.

* :meth:`JobStore.requeue_interrupted` (on start): jobs left ``running`` by a process that died
  go back to ``pending``; after ``max_interruptions`` such deaths a job fails with code
  ``interrupted`` instead of killing the service forever.
* :meth:`JobStore.submit`: one transaction checks the idempotency key (the same key with the same
  request returns the first job; with another request it is refused), returns an equal job that
  is still pending or running (same slide, options and overwrite), or inserts a new one.
* :meth:`JobStore.claim`: the oldest pending job whose slide no running job holds.
* ``watched``: what the hot folder has submitted (path and file signature), so that a restart
  submits nothing twice.

Connections are per thread (SQLite objects must not cross threads); writers take the database's
write lock with ``BEGIN IMMEDIATE``. WAL needs the database on a local file system: keep
``--out`` of a service on local disk (or NFS with care; the mode actually granted is logged).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tseg.runtime.errors import OutputError, TsegError

log = logging.getLogger(__name__)

STATE_DIR = ".tseg-service"
DATABASE = "jobs.sqlite3"
STATES = ("pending", "running", "success", "failure", "cancelled")
ACTIVE = ("pending", "running")
FINAL = ("success", "failure", "cancelled")

#: Schema migrations: ``MIGRATIONS[n]`` takes a database from version n to n + 1.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'success', 'failure', 'cancelled')),
            slide TEXT NOT NULL,
            options TEXT NOT NULL,
            overwrite INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT 'api',
            submitted_at REAL NOT NULL,
            not_before REAL NOT NULL DEFAULT 0,
            started_at REAL,
            finished_at REAL,
            first_tile_s REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            interruptions INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            stage TEXT,
            tiles_done INTEGER,
            tiles_total INTEGER,
            outcome TEXT,
            result_folder TEXT,
            detail TEXT,
            summary TEXT,
            error_code TEXT,
            error_message TEXT
        )""",
        "CREATE INDEX jobs_by_state ON jobs (state, seq)",
        "CREATE INDEX jobs_by_slide ON jobs (slide, state)",
        """CREATE TABLE idempotency_keys (
            key TEXT PRIMARY KEY,
            request_sha256 TEXT NOT NULL,
            job_id TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE watched (
            key TEXT PRIMARY KEY,
            signature TEXT NOT NULL,
            job_id TEXT NOT NULL,
            submitted_at REAL NOT NULL
        )""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(OutputError):
    """The job database cannot be opened or used."""


class IdempotencyConflict(TsegError):
    """An idempotency key was used before with another request."""

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(f"the Idempotency-Key {key!r} was used for another request (job {job_id}); use a new key "
                         "for a new request")


def to_db(text: str | None) -> str | bytes | None:
    """A path (or a message naming one) for SQLite: text, or its file-system bytes when it holds
    bytes that are not UTF-8 (Python keeps those as surrogates, which SQLite's text refuses)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def from_db(value: Any) -> Any:
    """:func:`to_db` undone."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


#: What a refusal of a full queue asks a client to wait (``Retry-After``, seconds).
QUEUE_FULL_RETRY_S = 30


class QueueFull(TsegError):
    """The queue already holds its limit of pending jobs (``--max-queued``)."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(f"the queue already holds {limit} pending jobs (--max-queued {limit}); submit again after "
                         f"{retry_after_s} s, when some have run")


@dataclass(frozen=True)
class Job:
    """One row of the queue, as stored."""

    seq: int
    id: str
    state: str
    slide: str
    options: dict[str, Any]
    overwrite: bool
    source: str
    submitted_at: float
    not_before: float
    started_at: float | None
    finished_at: float | None
    first_tile_s: float | None
    attempts: int
    interruptions: int
    cancel_requested: bool
    worker: str | None
    stage: str | None
    tiles_done: int | None
    tiles_total: int | None
    outcome: str | None
    result_folder: str | None
    detail: str | None
    summary: dict[str, Any] | None
    error_code: str | None
    error_message: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        data = dict(row)
        data["options"] = json.loads(data["options"])
        data["summary"] = json.loads(data["summary"]) if data["summary"] else None
        data["overwrite"] = bool(data["overwrite"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        for name in ("slide", "result_folder", "detail", "error_message"):
            data[name] = from_db(data[name])
        return cls(**data)

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass(frozen=True)
class Submitted:
    """What :meth:`JobStore.submit` did: ``created`` a job, found an equal ``active`` one, or
    ``replayed`` the job of an idempotency key."""

    job: Job
    how: str  # created | active | replayed


class JobStore:
    """The job database of one results folder. Thread-safe; one per process (the service holds
    the results folder's service lock, :mod:`tseg.runtime.service.core`)."""

    def __init__(self, out: Path, busy_timeout_s: float = 30.0) -> None:
        self.folder = Path(out) / STATE_DIR
        self.path = self.folder / DATABASE
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.folder, f"cannot create the service's state folder: {exc.strerror or exc}") from exc
        self._migrate()

    # --- connections and schema ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_ms / 1000,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        except sqlite3.OperationalError as exc:
            raise StoreError(self.path, f"cannot open the job database: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"not a usable job database ({exc}); move it away to start with an empty "
                                        "queue") from exc
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _tx(self) -> "_Transaction":
        return _Transaction(self._connect(), self.path)

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: SQLite refused WAL mode (%s): is the results folder on a network file system? "
                            "Jobs are still kept, with slower status calls", self.path, mode)
            with self._tx():
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(self.path, f"the job database has schema version {version}, newer than this "
                                                f"tseg-rt's {SCHEMA_VERSION}: upgrade tseg-rt, or use another --out")
                for step in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {step + 1}")
                    log.info("%s: job database schema %d -> %d", self.path, step, step + 1)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"not a usable job database ({exc}); move it away to start with an empty "
                                        "queue") from exc

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    # --- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, states: Sequence[str] = (), limit: int = 100, before_seq: int | None = None,
             slide: str | None = None) -> list[Job]:
        """Jobs, newest first; ``before_seq`` pages (the ``seq`` of the last job of a page)."""
        where, args = [], []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += list(states)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if slide is not None:
            where.append("slide = ?")
            args.append(to_db(slide))
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY seq DESC LIMIT ?"
        return [Job.from_row(r) for r in self._connect().execute(sql, (*args, int(limit))).fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    def queue_position(self, job: Job) -> int | None:
        """How many pending jobs come before ``job`` (None unless pending)."""
        if job.state != "pending":
            return None
        row = self._connect().execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND seq < ?",
                                      (job.seq,)).fetchone()
        return int(row[0])

    def next_due(self) -> float | None:
        """When the earliest pending job may start (None when none is pending)."""
        row = self._connect().execute("SELECT MIN(not_before) FROM jobs WHERE state = 'pending'").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    # --- submitting ----------------------------------------------------------------------------

    def submit(self, slide: str, options: dict[str, Any], overwrite: bool = False, source: str = "api",
               idempotency_key: str | None = None, request_sha256: str | None = None,
               watch_key: str | None = None, watch_signature: str | None = None,
               max_pending: int | None = None) -> Submitted:
        """Queue a job (see the module docstring for idempotency keys and equal active jobs).
        ``watch_key``/``watch_signature`` record a hot-folder submission in the same transaction.
        With ``max_pending``, a new job beyond that many pending ones is refused (:class:`QueueFull`);
        an equal pending job is still returned."""
        options_json = json.dumps(options, sort_keys=True)
        now = time.time()
        slide_db = to_db(slide)
        with self._tx() as conn:
            if idempotency_key is not None:
                key = conn.execute("SELECT request_sha256, job_id FROM idempotency_keys WHERE key = ?",
                                   (idempotency_key,)).fetchone()
                if key is not None:
                    if key[0] != (request_sha256 or ""):
                        raise IdempotencyConflict(idempotency_key, key[1])
                    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (key[1],)).fetchone()
                    if row is not None:
                        return Submitted(Job.from_row(row), "replayed")
            # An equal job still to come serves this request too; with overwrite only a pending one
            # (a running one may have started before the file changed, so overwrite runs again).
            active = "('pending', 'running')" if not overwrite else "('pending')"
            row = conn.execute(
                f"SELECT * FROM jobs WHERE slide = ? AND state IN {active} AND options = ? "
                "AND overwrite = ? ORDER BY seq LIMIT 1", (slide_db, options_json, int(bool(overwrite)))).fetchone()
            how = "active"
            if row is None:
                if max_pending is not None:
                    pending = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending'").fetchone()[0]
                    if pending >= max_pending:
                        raise QueueFull(max_pending, QUEUE_FULL_RETRY_S)
                how = "created"
                job_id = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO jobs (id, state, slide, options, overwrite, source, submitted_at, stage) "
                    "VALUES (?, 'pending', ?, ?, ?, ?, ?, 'queued')",
                    (job_id, slide_db, options_json, int(bool(overwrite)), source, now))
                row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if idempotency_key is not None:
                conn.execute("INSERT OR REPLACE INTO idempotency_keys (key, request_sha256, job_id, created_at) "
                             "VALUES (?, ?, ?, ?)", (idempotency_key, request_sha256 or "", row["id"], now))
            if watch_key is not None:
                self._record_watched(conn, watch_key, watch_signature or "", row["id"], now)
        return Submitted(Job.from_row(row), how)

    @staticmethod
    def _record_watched(conn: sqlite3.Connection, key: str, signature: str, job_id: str, now: float) -> None:
        conn.execute("INSERT INTO watched (key, signature, job_id, submitted_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET signature = excluded.signature, job_id = excluded.job_id, "
                     "submitted_at = excluded.submitted_at", (to_db(key), signature, job_id, now))

    def record_watched(self, key: str, signature: str, job_id: str) -> None:
        """Record a hot-folder entry without a job of its own (a folder of several DICOM series)."""
        with self._tx() as conn:
            self._record_watched(conn, key, signature, job_id, time.time())

    def watched(self, key: str) -> tuple[str, str] | None:
        """``(signature, job id)`` the hot folder recorded for ``key``, or None."""
        row = self._connect().execute("SELECT signature, job_id FROM watched WHERE key = ?", (to_db(key),)).fetchone()
        return (row[0], row[1]) if row else None

    # --- running ---------------------------------------------------------------------------------

    def claim(self, worker: str, now: float | None = None) -> Job | None:
        """Mark the oldest due pending job ``running`` for ``worker`` and return it; jobs whose
        slide another running job holds wait (two jobs never process one slide at once)."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1, worker = ?, "
                "stage = 'preparing', tiles_done = NULL, tiles_total = NULL WHERE seq = ("
                "  SELECT seq FROM jobs AS p WHERE p.state = 'pending' AND p.not_before <= ? AND NOT EXISTS ("
                "    SELECT 1 FROM jobs AS r WHERE r.state = 'running' AND r.slide = p.slide)"
                "  ORDER BY p.seq LIMIT 1) RETURNING *", (now, worker, now)).fetchone()
        return Job.from_row(row) if row else None

    def finish(self, job_id: str, state: str, *, outcome: str | None = None, result_folder: str | None = None,
               detail: str | None = None, summary: dict[str, Any] | None = None, error_code: str | None = None,
               error_message: str | None = None, tiles: tuple[int | None, int | None] = (None, None),
               first_tile_s: float | None = None) -> Job:
        """Record a running job's final state."""
        if state not in FINAL:
            raise ValueError(f"not a final state: {state}")
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, stage = 'done', outcome = ?, result_folder = ?, "
                "detail = ?, summary = ?, error_code = ?, error_message = ?, tiles_done = ?, tiles_total = ?, "
                "first_tile_s = ? WHERE id = ?",
                (state, time.time(), outcome, to_db(result_folder), to_db(detail),
                 json.dumps(summary) if summary else None, error_code, to_db(error_message), tiles[0], tiles[1],
                 first_tile_s, job_id))
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row)

    def requeue(self, job_id: str, delay_s: float = 0.0, detail: str | None = None, started: bool = True) -> None:
        """Put a running job back in the queue (shutdown, or its slide locked by another process);
        ``started=False``: it was claimed but never began, so the claim is not counted as an attempt."""
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET state = 'pending', not_before = ?, stage = 'queued', started_at = NULL, "
                         "worker = NULL, detail = ?, tiles_done = NULL, tiles_total = NULL, "
                         "attempts = attempts - ? WHERE id = ? AND state = 'running'",
                         (time.time() + delay_s, to_db(detail), 0 if started else 1, job_id))

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a pending job now; flag a running one (the runner stops it at its next tile).
        Returns the job as it is afterwards (None when unknown)."""
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, stage = 'done', "
                         "error_code = 'cancelled', error_message = 'cancelled before it started', "
                         "cancel_requested = 1 WHERE id = ? AND state = 'pending'", (time.time(), job_id))
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def requeue_interrupted(self, max_interruptions: int = 3) -> tuple[int, int]:
        """On start: jobs a dead process left ``running`` go back to ``pending`` (their partial
        outputs are hidden temporary folders, removed when the slide runs again), or fail after
        ``max_interruptions``. Returns (requeued, failed)."""
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, stage = 'done', error_code = 'cancelled', "
                         "error_message = 'cancelled; the service stopped before it ended' "
                         "WHERE state = 'running' AND cancel_requested = 1", (time.time(),))
            failed = conn.execute(
                "UPDATE jobs SET state = 'failure', finished_at = ?, stage = 'done', interruptions = interruptions + 1, "
                "error_code = 'interrupted', error_message = 'the service stopped ' || (interruptions + 1) || "
                "' times while processing this slide (killed, or out of memory?); not tried again' "
                "WHERE state = 'running' AND interruptions + 1 >= ?", (time.time(), max_interruptions)).rowcount
            requeued = conn.execute(
                "UPDATE jobs SET state = 'pending', stage = 'queued', interruptions = interruptions + 1, "
                "started_at = NULL, worker = NULL, detail = 'requeued: the service stopped while processing it' "
                "WHERE state = 'running'").rowcount
        return requeued, failed

    def prune(self, older_than_s: float) -> int:
        """Forget final jobs that finished more than ``older_than_s`` ago (results stay on disk)."""
        with self._tx() as conn:
            n = conn.execute("DELETE FROM jobs WHERE state IN ('success', 'failure', 'cancelled') "
                             "AND finished_at < ?", (time.time() - older_than_s,)).rowcount
            conn.execute("DELETE FROM idempotency_keys WHERE job_id NOT IN (SELECT id FROM jobs)")
            return n


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); SQLite errors become StoreError."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(self.path, f"cannot lock the job database: {exc}") from exc
        return self.conn

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self.conn.execute("ROLLBACK")
                raise StoreError(self.path, f"cannot write the job database: {error}") from error
        self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(self.path, f"job database error: {exc}") from exc

