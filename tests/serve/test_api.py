"""The job API of ``diff2lip serve`` against a real server process (uvicorn on 127.0.0.1) with httpx."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.video.io import VideoWriter, probe


def _submit(base: str, video: Path, audio: Path, **fields: str) -> httpx.Response:
    with open(video, "rb") as v, open(audio, "rb") as a:
        files = {"video": ("talk.mp4", v), "audio": ("speech.wav", a)}
        return httpx.post(f"{base}/api/v1/jobs", files=files, data=fields, timeout=60)


def _wait(base: str, job_id: str, timeout: float = 120, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


def test_submit_poll_download(serve_process, tmp_path, tiny_model_dir, talking_clip, speech_wav):
    with serve_process(tmp_path / "data", tiny_model_dir, "--no-ui") as (base, _):
        r = _submit(base, talking_clip, speech_wav, steps="1", length="video")
        assert r.status_code == 202 and r.json()["state"] == "queued"
        job_id = r.json()["id"]
        assert len(job_id) == 32  # 128 random bits
        seen = set()
        deadline = time.monotonic() + 120
        while (job := httpx.get(f"{base}/api/v1/jobs/{job_id}").json())["state"] not in ("done", "failed"):
            seen.add((job["state"], job["stage"]))
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["state"] == "done", job
        assert job["progress"] == 1.0 and "wrote result.mp4" in job["summary"]
        r = httpx.get(f"{base}/api/v1/jobs/{job_id}/result")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        out = tmp_path / "result.mp4"
        out.write_bytes(r.content)
        info = probe(out)
        assert (info.width, info.height) == (176, 144) and info.has_audio
        assert [j["id"] for j in httpx.get(f"{base}/api/v1/jobs").json()] == [job_id]
        health = httpx.get(f"{base}/healthz").json()
        assert health["ok"] and health["jobs"] == {"done": 1}
        assert "/api/v1/jobs" in httpx.get(f"{base}/openapi.json").json()["paths"]
        assert httpx.delete(f"{base}/api/v1/jobs/{job_id}").json()["state"] == "removed"
        assert httpx.get(f"{base}/api/v1/jobs/{job_id}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / job_id).exists()


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, talking_clip) -> Path:
    """The first 12 frames of the talking clip (jobs of a fraction of a second)."""
    from diff2lip.video.io import read_all

    chunk = read_all(talking_clip)
    out = tmp_path_factory.mktemp("short") / "short.mp4"
    with VideoWriter(out, width=176, height=144, fps=30000 / 1001, crf=12) as w:
        w.write(chunk.frames[:12], chunk.times[:12])
    return out


def test_ten_concurrent_submissions_all_finish_unmixed(
    serve_process, tmp_path, tiny_model_dir, short_clip, speech_wav
):
    talking_clip = short_clip
    with serve_process(tmp_path / "data", tiny_model_dir, "--no-ui") as (base, _):
        with ThreadPoolExecutor(10) as pool:
            lengths = ["video" if i % 2 else "shortest" for i in range(10)]
            responses = list(
                pool.map(lambda n: _submit(base, talking_clip, speech_wav, steps="1", length=n), lengths)
            )
        assert all(r.status_code == 202 for r in responses)
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == 10
        for job_id, length in zip(ids, lengths):
            job = _wait(base, job_id, timeout=300)
            assert job["state"] == "done", job
            assert job["options"] == {"steps": 1, "length": length}  # each job kept its own options
            out = tmp_path / f"{job_id}.mp4"
            out.write_bytes(httpx.get(f"{base}/api/v1/jobs/{job_id}/result").content)
            assert probe(out).num_frames == 12  # (both lengths: the clip is shorter than the speech)


def test_cancel_and_bad_requests(
    serve_process, tmp_path, tiny_model_dir, talking_clip, speech_wav, carphone_mp4
):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    grey = tmp_path / "grey.mp4"  # a real video without a face
    with VideoWriter(grey, width=64, height=48, fps=25) as w:
        w.write(np.full((10, 48, 64, 3), 128, np.uint8))
    with serve_process(tmp_path / "data", tiny_model_dir, "--no-ui", "--max-upload", "3M") as (base, _):
        r = _submit(base, text, speech_wav)
        assert r.status_code == 415 and "not a video, image or audio file" in r.json()["detail"]
        r = _submit(base, empty, speech_wav)
        assert r.status_code == 422 and "empty" in r.json()["detail"]
        r = _submit(base, talking_clip, carphone_mp4)  # a video without sound as the speech
        assert r.status_code == 415 and "no audio stream" in r.json()["detail"]
        big = tmp_path / "big.mp4"
        big.write_bytes(os.urandom(4 * 1024 * 1024))
        assert _submit(base, big, speech_wav).status_code == 413
        r = _submit(base, talking_clip, speech_wav, steps="zero")
        assert r.status_code == 422 and "steps must be an integer" in r.json()["detail"]
        r = _submit(base, talking_clip, speech_wav, colour="red")
        assert r.status_code == 422 and "unknown option" in r.json()["detail"]
        assert httpx.get(f"{base}/api/v1/jobs/../../etc/passwd").status_code == 404
        assert httpx.get(f"{base}/api/v1/jobs/nonexistent").status_code == 404

        no_face = _submit(base, grey, speech_wav, steps="1").json()["id"]
        job = _wait(base, no_face)
        assert job["state"] == "failed" and job["error"] == "no face was found in any frame"
        assert httpx.get(f"{base}/api/v1/jobs/{no_face}/result").status_code == 409

        slow = _submit(base, talking_clip, speech_wav, steps="50", length="video").json()["id"]
        queued = _submit(base, talking_clip, speech_wav, steps="1").json()["id"]
        assert httpx.delete(f"{base}/api/v1/jobs/{queued}").json()["state"] == "cancelled"
        while httpx.get(f"{base}/api/v1/jobs/{slow}").json()["state"] == "queued":
            time.sleep(0.1)
        assert httpx.delete(f"{base}/api/v1/jobs/{slow}").json()["state"] in ("cancelling", "cancelled")
        assert _wait(base, slow)["state"] == "cancelled"
        assert not (tmp_path / "data" / "jobs" / slow / "result.mp4").exists()
        assert httpx.get(f"{base}/api/v1/jobs/{queued}").json()["state"] == "cancelled"
        assert list((tmp_path / "data" / "incoming").iterdir()) == []  # rejected uploads leave nothing


def test_token_required_when_set_and_off_loopback(
    serve_process, tmp_path, tiny_model_dir, talking_clip, speech_wav, capsys
):
    with serve_process(tmp_path / "data", tiny_model_dir, "--no-ui", "--token", "s3cret") as (base, _):
        assert httpx.get(f"{base}/healthz").status_code == 401
        assert httpx.get(f"{base}/api/v1/jobs").status_code == 401
        assert httpx.get(f"{base}/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/api/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert main(["serve", "--host", "0.0.0.0", "--checkpoint", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--token" in err


def test_a_killed_server_loses_no_accepted_job(
    serve_process, tmp_path, tiny_model_dir, talking_clip, speech_wav
):
    data = tmp_path / "data"
    with serve_process(data, tiny_model_dir, "--no-ui") as (base, proc):
        ids = [
            _submit(base, talking_clip, speech_wav, steps="12", length="video").json()["id"] for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/api/v1/jobs/{ids[0]}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (data / "jobs" / ids[0] / "result.mp4").exists()
    with serve_process(data, tiny_model_dir, "--no-ui") as (base, _):
        first = httpx.get(f"{base}/api/v1/jobs/{ids[0]}").json()
        assert first["state"] in ("queued", "running")
        for job_id in ids:
            job = _wait(base, job_id, timeout=300)
            assert job["state"] == "done", job
        assert httpx.get(f"{base}/api/v1/jobs/{ids[0]}").json()["attempts"] == 2  # run again from its inputs
        out = tmp_path / "r.mp4"
        out.write_bytes(httpx.get(f"{base}/api/v1/jobs/{ids[0]}/result").content)
        assert probe(out).num_frames == 55
