"""SyncNet training with an exponential moving average of the weights (``ema_decay``, issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diff2lip.config import load_yaml, packaged_config_path
from diff2lip.errors import Diff2LipError
from diff2lip.models.syncnet import load_syncnet
from diff2lip.train.checkpoint import latest_checkpoint, load_checkpoint
from diff2lip.train.syncnet_trainer import SyncNetTrainConfig, config_from_dict, train_syncnet


def ema_config(data: Path, out: Path, **overrides) -> SyncNetTrainConfig:
    doc = load_yaml(packaged_config_path("syncnet_tiny"))
    doc.update(
        {"data_dir": str(data), "out_dir": str(out), "tensorboard": False, "ema_decay": 0.9, **overrides}
    )
    return config_from_dict(doc)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_invalid_ema_decay_is_an_error(tmp_path, decay):
    cfg = ema_config(tmp_path, tmp_path / "run", ema_decay=decay)
    with pytest.raises(Diff2LipError, match="ema_decay"):
        cfg.validate()


def test_ema_resume_is_exact_and_is_what_gets_exported(synth_corpus, tmp_path):
    full = ema_config(synth_corpus, tmp_path / "full", max_steps=4, eval_every=4, val_batches=1)
    train_syncnet(full, device="cpu", progress=False)
    half = ema_config(synth_corpus, tmp_path / "split", max_steps=2, eval_every=4, val_batches=1)
    train_syncnet(half, device="cpu", progress=False)
    half.max_steps = 4
    train_syncnet(half, resume=True, device="cpu", progress=False)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    assert set(a.weights) == {"model", "ema"}
    differs = False
    for k, v in a.weights["ema"].items():
        assert torch.equal(v, b.weights["ema"][k]), k
        differs |= not torch.equal(v, a.weights["model"][k])
    assert differs  # the average lags the trained weights
    # validation (only at step 4 here), "best" and the export use the averaged weights
    assert a.extra["best"]["step"] == 4
    for k, v in load_syncnet(tmp_path / "full" / "model").state_dict().items():
        assert torch.equal(v, a.weights["ema"][k]), k
