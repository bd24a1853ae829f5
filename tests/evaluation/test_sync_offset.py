"""AV-offset estimation: the sign convention on crafted cases, shifting audio, the file path and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diff2lip.audio.windows import sync_windows
from diff2lip.data import layout
from diff2lip.errors import Diff2LipError
from diff2lip.evaluation.sync import (
    OffsetResult,
    audio_group_count,
    crop_video_faces,
    estimate_offset,
    offset_from_embeddings,
    shift_audio,
)
from diff2lip.models.syncnet import SyncNetConfig


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


@pytest.mark.parametrize("k", [-4, 0, 3])
def test_offset_search_on_crafted_embeddings(k):
    g = torch.Generator().manual_seed(0)
    n = 60
    video = _unit(torch.randn(n, 8, generator=g))
    # the audio is delayed by k frames: audio group j carries the content of video group j - k
    audio = torch.stack(
        [video[j - k] if 0 <= j - k < n else _unit(torch.randn(1, 8, generator=g))[0] for j in range(n)]
    )
    r = offset_from_embeddings(video, audio, max_offset=6)
    assert isinstance(r, OffsetResult)
    assert r.offset == k and r.min_dist == pytest.approx(0.0, abs=1e-6)
    assert list(r.offsets) == list(range(-6, 7)) and r.dists.shape == (13,)
    assert r.num_groups == n - 2 * 6
    assert r.confidence == pytest.approx(float(np.median(r.dists)) - r.min_dist) and r.confidence > 0.5
    assert ("lags" if k > 0 else "leads" if k < 0 else "in sync") in r.summary()


def test_too_short_for_the_search_is_an_error():
    e = _unit(torch.ones(20, 4))
    with pytest.raises(Diff2LipError, match="too short to search ±10"):
        offset_from_embeddings(e, e, max_offset=10)


def test_shift_audio_delays_and_advances_keeping_length():
    wav = np.arange(16000, dtype=np.float32)
    late = shift_audio(wav, 2)  # 2 frames = 1280 samples later
    assert len(late) == len(wav) and (late[:1280] == 0).all() and late[1280] == 0 and late[1281] == 1
    early = shift_audio(wav, -1)
    assert early[0] == 640 and (early[-640:] == 0).all()


class BrightnessExpert:
    """A stand-in SyncNet with a known answer: faces embed their lower-half brightness over the 5 frames,
    audio windows the level of the mel columns at the same 5 frames (face frame f ↔ mel columns of f)."""

    config = SyncNetConfig(image_size=32, face_channels=(4, 4, 4), audio_channels=(4, 4), embed_dim=5)

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        levels = faces.reshape(len(faces), 5, 3, 16, 32).mean(dim=(2, 3, 4))  # (B, 5)
        return _unit(levels - 0.5)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        cols = mel[:, 0].mean(dim=1)  # (B, 16)
        levels = cols[:, [1, 4, 8, 11, 14]]  # the column inside each of the 5 frames (3.2 per frame)
        return _unit((levels + 4) / 8 - 0.5)


def _crafted_clip(n: int, delay: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose lower half has brightness s[i]; a mel carrying s delayed by ``delay`` frames."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, n + 40)
    faces = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    faces[:, 16:] = np.round(s[:n] * 255).astype(np.uint8)[:, None, None, None]
    t = np.arange(int(n * 3.2) + 1)
    frame_of_col = np.floor(t / 3.2 + 1e-9).astype(int) - delay  # the audio lags by `delay` frames
    mel = np.repeat((s[np.clip(frame_of_col, 0, n + 39)] * 8 - 4)[None], 80, axis=0).astype(np.float32)
    return faces, mel


@pytest.mark.parametrize("delay", [-5, -2, 0, 2, 7])
def test_estimate_offset_sign_convention(delay):
    faces, mel = _crafted_clip(80, delay)
    r = estimate_offset(faces, mel, BrightnessExpert(), max_offset=10)
    assert r.offset == delay  # > 0: the audio is late
    assert r.confidence > 0.1
    assert r.num_groups == min(80 - 4, audio_group_count(mel.shape[1]) - 10) - 10  # groups i in [K, …)


def test_audio_groups_cover_complete_windows_only():
    n = audio_group_count(321)  # 4 s of mel
    assert n == 96  # starts 0..95: floor(3.2·95) + 16 = 320 ≤ 321, group 96 would need 324
    last = sync_windows(np.zeros((80, 321), np.float32), [95 / 25])
    assert last.shape == (1, 80, 16)


# -------------------------------------------------------------------------- real files and the CLI


def test_video_crops_from_a_face_track_match_the_prepared_faces(synth_corpus):
    clip = layout.read_filelist(synth_corpus, "test")[0]
    faces, facts = crop_video_faces(
        synth_corpus / "raw" / f"{clip}.mp4", 32, face_track=synth_corpus / "clips" / clip / "track.json"
    )
    prepared = np.load(synth_corpus / "clips" / clip / "faces.npy")
    assert faces.shape == prepared.shape and not facts["resampled"]
    assert np.abs(faces.astype(float) - prepared).mean() < 6  # the same crops through H.264


def test_cli_reports_json_with_a_random_expert(synth_corpus, tiny_syncnet_dir, tmp_path, capsys):
    from diff2lip.cli import main

    clip = layout.read_filelist(synth_corpus, "test")[0]
    args = [str(synth_corpus / "raw" / f"{clip}.mp4"), str(synth_corpus / "raw" / f"{clip}.wav")]
    args += [
        "--syncnet",
        str(tiny_syncnet_dir),
        "--face-track",
        str(synth_corpus / "clips" / clip / "track.json"),
    ]
    assert main(["sync-offset", *args, "--max-offset", "5", "--json", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["offsets"] == list(range(-5, 6)) and len(doc["dists"]) == 11
    assert doc["offset"] == doc["offsets"][int(np.argmin(doc["dists"]))]
    assert doc["video"]["frames"] == 50

    assert main(["sync-offset", args[0], "--syncnet", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "not a saved SyncNet" in err
