"""`diff2lip batch`: manifests, resumability, failures listed, rank sharding across 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diff2lip.errors import Diff2LipError
from diff2lip.inference.batch import read_manifest, run_batch, shard, shard_from_env


def _csv(tmp_path: Path, n: int) -> Path:
    lines = ["video,audio,output,reference"] + [f"v{i}.mp4,a{i}.wav,out/o{i}.mp4," for i in range(n)]
    p = tmp_path / "rows.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_read_csv_and_jsonl(tmp_path):
    rows = read_manifest(_csv(tmp_path, 3))
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[1].video == tmp_path / "v1.mp4" and rows[1].output == tmp_path / "out" / "o1.mp4"
    assert rows[0].reference is None
    j = tmp_path / "rows.jsonl"
    j.write_text(
        json.dumps({"video": "/x/v.mp4", "audio": "a.wav", "output": "o.mp4", "reference": "first"}) + "\n"
    )
    (row,) = read_manifest(j)
    assert row.video == Path("/x/v.mp4") and row.reference == "first" and row.audio == tmp_path / "a.wav"


def test_manifest_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("video,audio\nv.mp4,a.wav\n")
    with pytest.raises(Diff2LipError, match="header"):
        read_manifest(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("video,audio,output\nv.mp4,a.wav,o.mp4\nw.mp4,b.wav,o.mp4\n")
    with pytest.raises(Diff2LipError, match="same output"):
        read_manifest(dup)


def test_shard_partitions_rows(tmp_path):
    rows = read_manifest(_csv(tmp_path, 7))
    parts = [shard(rows, r, 3) for r in range(3)]
    assert sorted(r.index for p in parts for r in p) == list(range(7))
    assert [r.index for r in parts[1]] == [1, 4]
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2) and shard_from_env({}) == (0, 1)
    with pytest.raises(Diff2LipError):
        shard(rows, 2, 2)


def test_run_batch_skips_done_and_continues_past_failures(tmp_path):
    rows = read_manifest(_csv(tmp_path, 4))
    (tmp_path / "out").mkdir()
    rows[0].output.write_bytes(b"done")
    seen = []

    def generate(row):
        seen.append(row.index)
        if row.index == 2:
            raise Diff2LipError("no face found", row.video)
        row.output.write_bytes(b"x")

    report = run_batch(rows, generate, progress=False)
    assert seen == [1, 2, 3] and report.skipped == [0] and report.done == [1, 3]
    assert report.failed == [(2, f"{rows[2].video}: no face found")]
    assert "row 2:" in report.summary() and "1 failed" in report.summary()
    assert run_batch(rows, generate, progress=False).skipped == [0, 1, 3]  # resumed


@pytest.mark.slow
def test_two_processes_share_the_rows(tmp_path, tiny_model_dir):
    """Two ranks under a torchrun-like environment: each takes its own rows; failures listed per rank."""
    manifest = _csv(tmp_path, 4)  # the videos do not exist: every row fails fast after the one model load
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}
        cmd = [
            sys.executable,
            "-m",
            "diff2lip",
            "batch",
            str(manifest),
            str(tiny_model_dir),
            "--no-progress",
            "--device",
            "cpu",
        ]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 1, err
        assert f"[rank {rank}/2] 0 generated, 0 already done, 2 failed" in out
        assert f"row {rank}:" in out and f"row {rank + 2}:" in out
        assert f"row {1 - rank}:" not in out


def test_output_root_contains_every_output(tmp_path):
    """--output-root: relative outputs land inside it; a row escaping it (.., absolute, a link out) fails
    with a one-line reason and the others run."""
    root = tmp_path / "jobs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "out_link").symlink_to(tmp_path)
    manifest = tmp_path / "rows.jsonl"
    outs = ["sub/ok.mp4", "../escape.mp4", str(tmp_path / "abs.mp4"), "sub/out_link/linked.mp4"]
    manifest.write_text(
        "".join(json.dumps({"video": "v.mp4", "audio": "a.wav", "output": o}) + "\n" for o in outs)
    )
    rows = read_manifest(manifest, output_root=root)
    assert rows[0].output == root / "sub" / "ok.mp4"
    report = run_batch(rows, lambda row: row.output.write_bytes(b"x"), progress=False, output_root=root)
    assert report.done == [0] and [i for i, _ in report.failed] == [1, 2, 3]
    assert all("outside --output-root" in msg and "\n" not in msg for _, msg in report.failed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs", "rows.jsonl"]
    assert (root / "sub" / "ok.mp4").is_file()
    # without the option a user's own manifest may write anywhere (relative to the manifest's folder)
    assert read_manifest(manifest)[1].output == tmp_path / "../escape.mp4"
