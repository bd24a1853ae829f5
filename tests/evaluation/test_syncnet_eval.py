"""syncnet_python's SyncNet, MFCC and offset search: loading, shapes, golden MFCC, crafted offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.evaluation.syncnet_eval import (
    SyncNetS,
    load_syncnet_python,
    mel_filterbank,
    mfcc,
    score_with_syncnet_python,
    sync_scores,
    syncnet_crops,
    to_int16_scale,
)

# python_speech_features 0.6 `mfcc(sig, 16000)` of a 0.1 s 440 Hz tone at half scale (int16), rows 3 and -1
GOLDEN_ROW3 = [20.499635873, 26.0435866851, 9.4326426796, -7.5628582118, -21.8810223643, -29.1958056797,
               -25.8789620133, -15.1936878285, -0.2099886631, 12.4969382831, 19.967966686, 19.1200844835,
               12.2692175295]  # fmt: skip
GOLDEN_LAST = [20.262295631, 22.1600993504, 5.7240145429, -10.0488948547, -22.9775323884, -29.2250843672,
               -25.3921304766, -14.7616507352, -0.4456540583, 11.3339378702, 17.8873151951, 16.6397967359,
               9.8626169073]  # fmt: skip


def test_mfcc_matches_python_speech_features_golden():
    sig = to_int16_scale(0.5 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000))
    out = mfcc(sig, 16000)
    assert out.shape == (9, 13)  # 1 + ceil((1600 − 400) / 160)
    np.testing.assert_allclose(out[3], GOLDEN_ROW3, rtol=1e-9)
    np.testing.assert_allclose(out[-1], GOLDEN_LAST, rtol=1e-9)
    assert mfcc(sig[:100], 16000).shape == (1, 13)  # shorter than one frame: one zero-padded frame


def test_mel_filterbank_triangles():
    fb = mel_filterbank()
    assert fb.shape == (26, 257) and fb.max() == pytest.approx(1.0) and fb.min() == 0.0
    assert (fb.sum(axis=0)[3:250] > 0).all()  # the triangles tile the spectrum


def test_syncnet_s_shapes_and_strict_load(tmp_path):
    torch.manual_seed(0)
    net = SyncNetS().eval()
    sd = net.state_dict()
    assert len(sd) == 102 and sum(p.numel() for p in net.parameters()) == 13_631_616
    assert tuple(sd["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(sd["netcnnaud.18.weight"].shape) == (512, 256, 5, 4)
    assert tuple(sd["netfcaud.3.weight"].shape) == (1024, 512)
    assert tuple(sd["netfclip.1.running_mean"].shape) == (512,)
    with torch.no_grad():
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / "s.model")
    loaded = load_syncnet_python(tmp_path / "s.model")
    assert torch.equal(loaded.netfclip[3].bias, net.netfclip[3].bias)
    with pytest.raises(Diff2LipError, match=r"syncnet_v2\.model"):
        load_syncnet_python(tmp_path / "missing.model")


def test_sync_scores_on_crafted_features():
    rng = np.random.default_rng(0)
    feats = torch.from_numpy(rng.standard_normal((60, 16)))
    aligned = sync_scores(feats, feats, vshift=15)
    assert aligned.offset == 0 and aligned.sync_d == pytest.approx(0.0, abs=1e-5)
    for k in (3, -4):
        delayed = torch.roll(feats, k, dims=0)  # the audio of video group i is audio group i + k
        s = sync_scores(feats, delayed, vshift=15)
        assert s.offset == k
        assert s.sync_c < aligned.sync_c and s.sync_d > aligned.sync_d
    assert len(aligned.dists) == 31 and aligned.sync_c == pytest.approx(
        float(np.sort(aligned.dists)[15]) - aligned.sync_d
    )


class _BrightnessLoudnessNet:
    """A crafted 'SyncNet': lips → the 5 frame brightnesses, audio → the log energy at each frame."""

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 5, H, W)
        f = x.mean(dim=(1, 3, 4))  # (B, 5)
        return (f - f.mean(1, keepdim=True)) * 0.05

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 13, 20)
        e = x[:, 0, 0, ::4]  # (B, 5): log energy of the first MFCC frame of each video frame
        return e - e.mean(1, keepdim=True)


def test_audio_delay_of_k_frames_is_found_end_to_end():
    """Crops whose brightness follows the speech loudness; delaying the audio by k frames → offset k."""
    rng = np.random.default_rng(1)
    n = 60
    loud = rng.uniform(0.05, 1.0, n)  # per-frame loudness
    t = np.arange(n * 640) / 16000
    wav = np.repeat(loud, 640) * np.sin(2 * np.pi * 300 * t) * 0.5
    level = np.log(loud**2)  # brightness ∝ log energy
    level = (level - level.min()) / np.ptp(level)
    crops = (
        np.repeat((40 + 180 * level)[:, None, None, None], 8, 1).repeat(8, 2).repeat(3, 3).astype(np.uint8)
    )
    net = _BrightnessLoudnessNet()
    aligned = score_with_syncnet_python(net, crops, wav, vshift=10)
    assert aligned.offset == 0
    k = 3
    delayed = np.concatenate([np.zeros(k * 640), wav[: len(wav) - k * 640]])
    s = score_with_syncnet_python(net, crops, delayed, vshift=10)
    assert s.offset == k and s.sync_d > aligned.sync_d  # the prepended silence matches nothing


def test_syncnet_crops_geometry():
    frames = np.zeros((3, 100, 120, 3), np.uint8)
    frames[:, 40:60, 50:70] = 255  # a white face box
    boxes = np.tile([50, 40, 70, 60], (3, 1))
    crops = syncnet_crops(frames, boxes, size=56)
    assert crops.shape == (3, 56, 56, 3)
    # window rows [cy − s, cy + 1.8 s) = [40, 68), cols [cx − 1.4 s, cx + 1.4 s) = [46, 74): box at top middle
    assert crops[0, 2, 28].min() > 200 and crops[0, -2, 28].max() < 20 and crops[0, 2, 2].max() < 20
