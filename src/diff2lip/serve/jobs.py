"""The durable job queue of ``diff2lip serve``: SQLite (WAL) rows plus one folder per job.

A job is **accepted** when its row exists: its inputs are written into ``DATA/incoming/<id>/`` first, the
folder is renamed to ``DATA/jobs/<id>/`` and only then is the row inserted, so a crash at any point leaves
either nothing or a complete job (stray folders without a row are removed at start). Results are written
by :func:`~diff2lip.inference.runner.generate_video`, which publishes the file atomically, so a result
that exists is complete. At start every ``running`` job (its server was killed) goes back to ``queued``
and runs again from its inputs. One server per data folder: a lock file refuses a second one.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``; a running job asked to stop is
``cancelling`` until its worker notices (at the next progress report).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import remove_tree

__all__ = ["FINAL_STATES", "Job", "JobStore"]

FINAL_STATES = ("done", "failed", "cancelled")
RESULT_NAME = "result.mp4"
PREVIEW_NAME = "preview.png"  # the running job's current x̂0 (the live diffusion preview)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    eta_s REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL,
    inputs TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
)
"""


@dataclass
class Job:
    """One row of the queue (what ``GET /api/v1/jobs/{id}`` returns, less the folder)."""

    id: str
    state: str
    stage: str = ""
    progress: float = 0.0
    eta_s: float | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # role ("video", "audio") → file name in the folder
    summary: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("inputs")
        doc["has_result"] = self.state == "done"
        return doc


class JobStore:
    """The queue (thread-safe: one connection behind a lock). ``root`` holds ``jobs.sqlite3`` and the job
    folders; :meth:`close` releases the single-server lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / "server.lock", "w")  # noqa: SIM115 (held for the store's life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise Diff2LipError("another diff2lip serve is using this data folder", self.root) from None
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut
        self._db.execute(_SCHEMA)
        self._mutex = threading.Lock()
        self.wakeup = threading.Condition()
        self._recover()

    # -- lifecycle

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    def _recover(self) -> None:
        """After a crash: running jobs run again; folders of jobs that were never accepted go."""
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET state='queued', stage='queued again after a restart', progress=0, "
                "eta_s=NULL WHERE state IN ('running')"
            )
            self._db.execute(
                "UPDATE jobs SET state='cancelled', stage='', finished=? WHERE state='cancelling'",
                (time.time(),),
            )
            known = {r["id"] for r in self._db.execute("SELECT id FROM jobs")}
        for folder in (self.root / "incoming").iterdir():
            remove_tree(folder)
        for folder in (self.root / "jobs").iterdir():
            if folder.name not in known:
                remove_tree(folder)

    # -- jobs

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def result_path(self, job_id: str) -> Path:
        return self.folder(job_id) / RESULT_NAME

    def preview_path(self, job_id: str) -> Path:
        return self.folder(job_id) / PREVIEW_NAME

    def new_id(self) -> str:
        """An unguessable id (128 random bits), also safe as a folder name."""
        return secrets.token_hex(16)

    def incoming(self, job_id: str) -> Path:
        """The folder to write a new job's inputs into before :meth:`submit`."""
        path = self.root / "incoming" / job_id
        path.mkdir(parents=True)
        return path

    def submit(self, job_id: str, inputs: dict[str, str], options: dict[str, Any]) -> Job:
        """Accept a job whose input files are complete in :meth:`incoming` (``inputs``: role → file name)."""
        staging = self.root / "incoming" / job_id
        for name in inputs.values():
            if not (staging / name).is_file():
                raise Diff2LipError(f"input {name} of job {job_id} is missing")
        for name in os.listdir(staging):
            fd = os.open(staging / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(staging, self.folder(job_id))
        job = Job(id=job_id, state="queued", created=time.time(), options=options, inputs=inputs)
        with self._mutex:
            self._db.execute(
                "INSERT INTO jobs (id, state, created, options, inputs) VALUES (?, ?, ?, ?, ?)",
                (job.id, job.state, job.created, json.dumps(options), json.dumps(inputs)),
            )
        with self.wakeup:
            self.wakeup.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._mutex:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def list(self, limit: int = 100) -> list[Job]:
        with self._mutex:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def claim(self) -> Job | None:
        """The oldest queued job, now ``running`` (atomically), or ``None``."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT id FROM jobs WHERE state='queued' ORDER BY created LIMIT 1"
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute(
                    "UPDATE jobs SET state='running', started=?, attempts=attempts+1, stage='starting', "
                    "progress=0 WHERE id=?",
                    (time.time(), row["id"]),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(row["id"])

    def report(self, job_id: str, stage: str, progress: float, eta_s: float | None) -> str:
        """Record a running job's progress; returns its state (``cancelling`` tells the worker to stop)."""
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET stage=?, progress=?, eta_s=? WHERE id=? AND state='running'",
                (stage, float(progress), eta_s, job_id),
            )
            row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return "cancelled" if row is None else row["state"]

    def finish(self, job_id: str, state: str, *, summary: str = "", error: str = "") -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET state=?, finished=?, summary=?, error=?, eta_s=NULL, "
                "progress=CASE WHEN ?='done' THEN 1 ELSE progress END, stage=? WHERE id=?",
                (state, time.time(), summary, error, state, state, job_id),
            )

    def cancel(self, job_id: str) -> Job | None:
        """Queued → cancelled; running → cancelling (its worker stops at its next progress report); a
        finished job is removed with its files. Returns the job as it is now (``None`` if removed/unknown)."""
        job = self.get(job_id)
        if job is None:
            return None
        with self._mutex:
            if job.state == "queued":
                self._db.execute(
                    "UPDATE jobs SET state='cancelled', finished=? WHERE id=? AND state='queued'",
                    (time.time(), job_id),
                )
            elif job.state == "running":
                self._db.execute(
                    "UPDATE jobs SET state='cancelling' WHERE id=? AND state='running'", (job_id,)
                )
            elif job.state in FINAL_STATES:
                self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        if job.state in FINAL_STATES:
            remove_tree(self.folder(job_id))
            return None
        return self.get(job_id)

    def purge(self, older_than_s: float) -> int:
        """Remove finished jobs (rows and files) that finished more than ``older_than_s`` seconds ago."""
        limit = time.time() - older_than_s
        with self._mutex:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished < ?",
                (limit,),
            ).fetchall()
            self._db.executemany("DELETE FROM jobs WHERE id=?", [(r["id"],) for r in rows])
        for r in rows:
            remove_tree(self.folder(r["id"]))
        return len(rows)

    def wait_for_work(self, timeout: float) -> None:
        """Sleep until a job is submitted (or ``timeout`` seconds)."""
        with self.wakeup:
            self.wakeup.wait(timeout)

    def counts(self) -> dict[str, int]:
        with self._mutex:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=row["state"],
        stage=row["stage"],
        progress=row["progress"],
        eta_s=row["eta_s"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        attempts=row["attempts"],
        options=json.loads(row["options"]),
        inputs=json.loads(row["inputs"]),
        summary=row["summary"],
        error=row["error"],
    )
