"""Models known by name: ``--checkpoint demo`` and ``--checkpoint paper``.

* ``demo``: the model bundled in the package (``diff2lip/assets/demo_model``, a few-step student trained on
  the synthetic corpus; see ``assets/README.md``) — it only knows synthetic faces.
* ``paper``: the official checkpoint converted with ``diff2lip convert``, looked up at
  ``$DIFF2LIP_HOME/models/paper`` (``DIFF2LIP_HOME`` defaults to ``~/.diff2lip``); put it there once with
  ``diff2lip convert e7.24.1.3_model260000_paper.pt ~/.diff2lip/models/paper``.

A path that exists always wins over a name, so a folder called ``demo`` in the working directory is used
as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from diff2lip.errors import Diff2LipError

__all__ = ["MODEL_NAMES", "diff2lip_home", "resolve_model"]

MODEL_NAMES = ("demo", "paper")


def diff2lip_home() -> Path:
    """``$DIFF2LIP_HOME``, else ``~/.diff2lip``."""
    return Path(os.environ.get("DIFF2LIP_HOME") or Path.home() / ".diff2lip").expanduser()


def _named(name: str) -> Path:
    if name == "demo":
        from diff2lip.demo import bundled_model_dir

        return bundled_model_dir()
    return diff2lip_home() / "models" / name


def names_help() -> str:
    """One line listing the names and where each is looked up (for errors and ``--help``)."""
    return (
        f"'demo' (the bundled synthetic-face model) or 'paper' (the converted official model at "
        f"{_named('paper')}; $DIFF2LIP_HOME/models/paper)"
    )


def resolve_model(spec: str | Path | None) -> Path:
    """A ``--checkpoint`` value → the path to load: an existing path as it is, else a known name."""
    if spec is None or str(spec) == "":
        raise Diff2LipError(f"no --checkpoint given: pass a model directory, an official .pt, {names_help()}")
    path = Path(spec).expanduser()
    if path.exists() or str(spec) not in MODEL_NAMES:
        return path
    found = _named(str(spec))
    if not found.exists():
        raise Diff2LipError(
            f"model '{spec}' is not installed: convert the official checkpoint there with `diff2lip convert "
            f"e7.24.1.3_model260000_paper.pt {found}` (or set DIFF2LIP_HOME)",
            found,
        )
    return found
