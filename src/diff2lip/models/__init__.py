"""diff2lip.models: the Diff2Lip UNet and audio encoder (DESIGN.md §3), their config and serialization."""

from diff2lip.models.audio_encoder import AudioEncoder
from diff2lip.models.config import UNetConfig, load_model_config
from diff2lip.models.serialization import (
    PretrainedModel,
    convert_official,
    load_checkpoint,
    load_official_state_dict,
    load_pretrained,
    save_pretrained,
)
from diff2lip.models.unet import Diff2LipUNet

__all__ = [
    "AudioEncoder",
    "Diff2LipUNet",
    "PretrainedModel",
    "UNetConfig",
    "convert_official",
    "load_checkpoint",
    "load_model_config",
    "load_official_state_dict",
    "load_pretrained",
    "save_pretrained",
]
