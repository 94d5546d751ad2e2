"""The job store's file (issue 19, item 6): a damaged store or another program's SQLite database is one
StoreError line at open and is left byte for byte as it was; an SQLite error in any later call is one
StoreError line too; stores older ordercomp versions wrote still open."""
from __future__ import annotations

import sqlite3

import pytest

from ordercomp.jobs import JobStore, StoreError
from ordercomp.jobs.store import APPLICATION_ID

# The schema of the first stores (before job kinds and the settings table), as ordercomp wrote it then.
FIRST_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'cancelling', 'cancelled', 'failed', 'done')),
    error TEXT, pid INTEGER, created REAL NOT NULL, updated REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0, label TEXT NOT NULL DEFAULT '', fraction REAL NOT NULL DEFAULT 0, result TEXT);
CREATE TABLE steps (job_id TEXT NOT NULL REFERENCES jobs(id), chain TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL,
    reason TEXT, metrics TEXT, seconds REAL NOT NULL, UNIQUE (job_id, chain, seed));
CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id), time REAL NOT NULL,
    message TEXT NOT NULL);
CREATE INDEX log_by_job ON log (job_id, id);
INSERT INTO jobs (id, spec, status, created, updated) VALUES ('0123456789ab', '{}', 'done', 1, 1);
"""

# Issue 19's reproductions: SQLite files of other programs that ORDERCOMP_STORE could point at.
OTHER_PROGRAMS = {
    "other tables": ("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT); CREATE TABLE users (name TEXT); "
                     "INSERT INTO jobs VALUES (1, 'print the report');", "it holds users, which ordercomp never made"),
    "jobs of another shape": ("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT); INSERT INTO jobs VALUES (1, 'x');",
                              "its tables have other columns"),
    "another application id": ("PRAGMA application_id = 1234; CREATE TABLE notes (text TEXT);", "its application id is 0x4d2"),
}


def sqlite_file(path, script: str):
    connection = sqlite3.connect(path)
    connection.executescript(script)
    connection.close()
    return path


@pytest.fixture
def used_store(tmp_path, tiny_spec):
    """A store holding a few jobs with log lines, so its tables span several pages."""
    store = JobStore(tmp_path / "jobs.sqlite")
    for _ in range(20):
        store.append_log(store.create(tiny_spec()), "a log line " * 40)
    return store


@pytest.mark.parametrize("case", OTHER_PROGRAMS)
def test_another_programs_database_is_refused_and_left_byte_for_byte(tmp_path, case):
    script, reason = OTHER_PROGRAMS[case]
    path = sqlite_file(tmp_path / "app.db", script)
    before = path.read_bytes()
    with pytest.raises(StoreError) as refusal:
        JobStore(path)
    assert str(refusal.value) == (f"the job store {path} is not an ordercomp job store ({reason}): set ORDERCOMP_STORE to a new path; "
                                  "the file was left as it was")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["app.db"]


def test_a_store_with_damaged_pages_is_one_line_at_open_and_left_as_it_was(used_store, damage_pages):
    damage_pages(used_store.path)
    before = used_store.path.read_bytes()
    with pytest.raises(StoreError, match=r"^the job store .*jobs.sqlite is damaged \(.+\): set ORDERCOMP_STORE to a new path, or "
                                         r"restore the file from a backup; the file was left as it was$") as refusal:
        JobStore(used_store.path)
    assert "\n" not in str(refusal.value) and used_store.path.read_bytes() == before


def test_every_call_on_a_store_damaged_after_it_was_opened_is_one_store_error(used_store, damage_pages, tiny_spec):
    job_id = used_store.list_jobs()[0]["id"]
    damage_pages(used_store.path)
    calls = [lambda: used_store.get(job_id), used_store.list_jobs, lambda: used_store.create(tiny_spec()),
             lambda: used_store.steps(job_id), lambda: used_store.log(job_id), lambda: used_store.append_log(job_id, "x"),
             lambda: used_store.set_status(job_id, "failed"), lambda: used_store.request_cancel(job_id),
             lambda: used_store.set_progress(job_id, "x", 0.5), used_store.step_seconds]
    for call in calls:
        with pytest.raises(StoreError, match=r"^the job store .* cannot be used \(database disk image is malformed\): ") as refusal:
            call()
        assert "\n" not in str(refusal.value)


@pytest.mark.parametrize("migrated", ["first schema", "with job kinds, before settings"])
def test_stores_older_ordercomp_versions_wrote_still_open(tmp_path, migrated):
    script = FIRST_SCHEMA + ("" if migrated == "first schema" else "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'explore';")
    path = sqlite_file(tmp_path / "jobs.sqlite", script)
    store = JobStore(path)
    assert store.get("0123456789ab")["kind"] == "explore"
    store.set_setting("max_workers", "2")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_store_of_another_ordercomp_version_is_refused_and_left_as_it_was(tmp_path):
    path = sqlite_file(tmp_path / "jobs.sqlite", f"PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 99; "
                                                 "CREATE TABLE jobs (id TEXT);")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"written by another ordercomp version \(schema 99, this one uses 3\): open it with that "
                                         "version, or set ORDERCOMP_STORE to a new path; the file was left as it was$"):
        JobStore(path)
    assert path.read_bytes() == before
