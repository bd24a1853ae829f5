"""diff2lip: audio-conditioned diffusion for lip-synchronization (Mukhopadhyay et al., WACV 2024)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diff2lip")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
