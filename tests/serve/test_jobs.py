"""The job queue of ``diff2lip serve`` without a server: acceptance, order, recovery, cancel, retention."""

from __future__ import annotations

import time

import pytest

from diff2lip.errors import Diff2LipError
from diff2lip.serve.jobs import JobStore
from diff2lip.serve.worker import generate_options, job_options


def _accept(store: JobStore, **options: object) -> str:
    job_id = store.new_id()
    folder = store.incoming(job_id)
    (folder / "video").write_bytes(b"v")
    (folder / "audio").write_bytes(b"a")
    store.submit(job_id, {"video": "video", "audio": "audio"}, dict(options))
    return job_id


def test_jobs_run_in_order_and_a_restart_requeues_the_running_one(tmp_path):
    store = JobStore(tmp_path)
    first, second = _accept(store, steps=1), _accept(store)
    (tmp_path / "incoming" / "half-written").mkdir()  # a job whose upload never finished
    (tmp_path / "jobs" / "no-row").mkdir()  # renamed, but the server died before its row was written
    assert store.claim().id == first
    with pytest.raises(Diff2LipError, match="another diff2lip serve"):
        JobStore(tmp_path)  # one server per data folder
    store.close()  # ... killed while `first` was running

    store = JobStore(tmp_path)
    job = store.get(first)
    assert job.state == "queued" and job.attempts == 1 and job.options == {"steps": 1}
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted([first, second])
    assert list((tmp_path / "incoming").iterdir()) == []
    assert [store.claim().id, store.claim().id, store.claim()] == [first, second, None]
    assert store.get(first).attempts == 2
    store.close()


def test_cancel_and_retention(tmp_path):
    store = JobStore(tmp_path)
    queued, running, done = _accept(store), _accept(store), _accept(store)
    assert store.cancel(queued).state == "cancelled"
    assert store.claim().id == running
    assert store.cancel(running).state == "cancelling"
    assert store.report(running, "generating", 0.5, 3.0) == "cancelling"  # the worker stops here
    store.finish(running, "cancelled")
    assert store.claim().id == done
    store.finish(done, "done", summary="wrote result.mp4")
    assert store.get(done).progress == 1.0 and store.get(done).stage == "done"
    assert store.purge(older_than_s=3600) == 0  # kept for --keep-hours
    time.sleep(0.05)
    assert store.purge(older_than_s=0.01) == 3
    assert store.list() == [] and list((tmp_path / "jobs").iterdir()) == []
    store.close()


def test_job_options_are_checked_and_mapped():
    opts = job_options(
        {"steps": "2", "face_select": "central", "crf": "auto", "seed": "", "reference": "frame:3"}
    )
    assert opts == {"steps": 2, "face_select": "central", "reference": "frame:3"}
    assert generate_options(opts).choose == "central" and generate_options(opts).crf is None
    for bad, message in [
        ({"steps": "0"}, "steps must be >= 1"),
        ({"reference": "image:/etc/passwd"}, "reference must be self, first or frame:N"),
        ({"crf": "99"}, "crf must be between 0 and 51"),
        ({"colour": "red"}, "unknown option"),
    ]:
        with pytest.raises(Diff2LipError, match=message):
            job_options(bad)


def test_serve_refuses_a_data_folder_another_server_holds(tmp_path, tiny_model_dir, capsys):
    from diff2lip.cli import main

    store = JobStore(tmp_path)
    try:
        assert main(["serve", "--data-dir", str(tmp_path), "--checkpoint", str(tiny_model_dir)]) == 2
    finally:
        store.close()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another diff2lip serve is using this data folder" in err
