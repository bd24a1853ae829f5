"""Config files (diff2lip.config): YAML/JSON round trips written atomically."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from diff2lip.config import load_config, save_json, save_yaml


@dataclass
class _Cfg:
    name: str = "tiny"
    sizes: tuple[int, ...] = (1, 2)


@pytest.mark.parametrize("save", [save_yaml, save_json])
def test_save_round_trips_and_a_failed_write_keeps_the_old_file(save, tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    save(_Cfg(), path)
    assert load_config(_Cfg, path) == _Cfg()
    before = path.read_text()
    write_text = Path.write_text

    def fail_half_way(self: Path, text: str, *args, **kwargs) -> int:
        write_text(self, text[:5], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        save(replace(_Cfg(), name="other"), path)
    monkeypatch.undo()
    assert path.read_text() == before and list(tmp_path.iterdir()) == [path]  # no partial file, no temp
