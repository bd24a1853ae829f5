"""The sequence PatchGAN critic: input stacking, output shapes, temporal sensitivity, config errors."""

from __future__ import annotations

import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.models.discriminator import DiscriminatorConfig, SequencePatchDiscriminator


def make(**kw) -> SequencePatchDiscriminator:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SequencePatchDiscriminator(DiscriminatorConfig(**kw))


@pytest.mark.parametrize(
    ("size", "region", "layers", "shape"),
    [
        (32, "full", 2, (2, 1, 6, 6)),
        (64, "full", 3, (2, 1, 6, 6)),
        (64, "lower_half", 3, (2, 1, 2, 6)),
        (128, "full", 3, (2, 1, 14, 14)),
    ],
)
def test_patch_logits_shape(size, region, layers, shape):
    d = make(base_channels=8, num_layers=layers, region=region)
    out = d(torch.zeros(2, 5, 3, size, size))
    assert out.shape == shape


def test_frames_are_stacked_frame_major_on_channels():
    d = make(base_channels=8, region="lower_half")
    frames = torch.arange(5 * 3, dtype=torch.float32).view(1, 5, 3, 1, 1).expand(1, 5, 3, 8, 4)
    x = d.stack(frames)
    assert x.shape == (1, 15, 4, 4)
    assert torch.equal(x[0, :, 0, 0], torch.arange(15, dtype=torch.float32))  # channel 3f + c


def test_sees_temporal_order_and_passes_gradients():
    d = make(base_channels=8, num_layers=2)
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(1, 5, 3, 32, 32, generator=g, requires_grad=True)
    out = d(frames)
    assert not torch.allclose(out, d(frames.flip(1)))
    out.mean().backward()
    assert frames.grad.abs().sum() > 0 and all(p.grad is not None for p in d.parameters())


def test_bad_config_and_input():
    with pytest.raises(Diff2LipError, match="region"):
        DiscriminatorConfig(region="upper")
    with pytest.raises(ValueError, match="frames must be"):
        make(base_channels=8)(torch.zeros(1, 4, 3, 32, 32))
