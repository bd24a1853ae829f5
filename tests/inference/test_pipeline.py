"""Diff2LipPipeline: shared noise, composition, batching invariance, OOM back-off, callbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.inference.pipeline import Diff2LipPipeline, resolve_device, shared_noise


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> Diff2LipPipeline:
    return Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def inputs(pipe):
    rng = np.random.default_rng(0)
    s = pipe.image_size
    faces = rng.integers(0, 256, (6, s, s, 3), dtype=np.uint8)
    mels = rng.normal(0, 1.5, (6, 80, 16)).astype(np.float32)
    return faces, mels


def test_shared_noise_equals_official_global_seed():
    with torch.random.fork_rng():
        torch.manual_seed(7)
        official = torch.randn(1, 3, 128, 128)
    assert torch.equal(shared_noise(128, 7), official)
    assert not torch.equal(shared_noise(128, 8), official)


def test_upper_half_is_the_input_bit_for_bit(pipe, inputs):
    faces, mels = inputs
    out = pipe(faces, mels, steps=3)
    s = pipe.image_size
    assert out.shape == faces.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, : s // 2], faces[:, : s // 2])
    assert np.abs(out[:, s // 2 :].astype(int) - faces[:, s // 2 :]).mean() > 5  # lower half regenerated


def test_deterministic_and_batch_size_invariant(pipe, inputs):
    faces, mels = inputs
    a = pipe(faces, mels, steps=3, batch_size=6)
    b = pipe(faces, mels, steps=3, batch_size=6)
    c = pipe(faces, mels, steps=3, batch_size=1)  # chunking must create no seams: one shared noise
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).max() <= 1


def test_self_reference_equals_explicit_refs(pipe, inputs):
    faces, mels = inputs
    np.testing.assert_array_equal(pipe(faces, mels, steps=2), pipe(faces, mels, faces, steps=2))
    other = pipe(faces, mels, faces[::-1].copy(), steps=2)
    assert not np.array_equal(other, pipe(faces, mels, steps=2))


def test_audio_changes_the_mouth(pipe, inputs):
    faces, mels = inputs
    a = pipe(faces, mels, steps=2)
    b = pipe(faces, -mels, steps=2)
    assert not np.array_equal(a, b)  # random weights: the audio style is weak, but it must reach the output


def test_auto_batch_backs_off_on_out_of_memory(pipe, inputs, monkeypatch):
    faces, mels = inputs
    expected = pipe(faces, mels, steps=2, batch_size=2)
    real_forward = pipe.model.forward
    sizes = []

    def fake_forward(x_t, *args, **kwargs):
        sizes.append(x_t.shape[0])
        if x_t.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(x_t, *args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", fake_forward)
    out = pipe(faces, mels, steps=2, batch_size="auto")
    np.testing.assert_array_equal(out, expected)
    assert sizes[0] == 4 and max(sizes[1:]) == 2  # auto starts at 4 on CPU, then halves
    with pytest.raises(RuntimeError, match="out of memory"):
        pipe(faces, mels, steps=2, batch_size=4)  # an explicit batch size never backs off


def test_callback_per_step_and_sampler_override(pipe, inputs):
    faces, mels = inputs
    calls = []
    pipe(faces[:2], mels[:2], sampler="dpmpp", steps=4, callback=lambda i, n, x, x0: calls.append((i, n)))
    assert calls == [(i, 4) for i in range(4)]


def test_bad_inputs(pipe, inputs):
    faces, mels = inputs
    with pytest.raises(Diff2LipError, match="face crops"):
        pipe(faces[:, :10], mels)
    with pytest.raises(Diff2LipError, match="mel windows"):
        pipe(faces, mels[:3])
    with pytest.raises(Diff2LipError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_bf16_refused_on_cpus_without_native_bf16(tiny_model_dir, monkeypatch):
    import diff2lip.inference.pipeline as P

    monkeypatch.setattr(P, "cpu_supports_fast_bf16", lambda: False)
    with pytest.raises(Diff2LipError, match="bf16 on this CPU"):
        Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16")
    monkeypatch.setattr(P, "cpu_supports_fast_bf16", lambda: True)
    pipe = Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16")
    assert pipe.dtype == torch.bfloat16
    with pytest.raises(Diff2LipError, match="fp16"):
        Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="fp16")


def test_precomputed_audio_style_equals_mel_path(pipe):
    g = torch.Generator().manual_seed(0)
    s = pipe.image_size
    x = torch.randn(3, 3, s, s, generator=g)
    mel = torch.randn(3, 80, 16, generator=g)
    mask = torch.zeros(1, 1, s, s)
    mask[..., s // 2 :, :] = 1
    t = torch.tensor([10, 500, 900])
    with torch.inference_mode():
        a = pipe.model(x, t, x, mask, x, mel)
        b = pipe.model(x, t, x, mask, x, audio_style=pipe.model.encode_audio(mel))
    torch.testing.assert_close(a, b)
