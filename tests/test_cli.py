"""One set of CLI conventions (issue 17): help with real defaults, usage errors, aliases, README commands."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from diff2lip.cli import build_parser, main
from diff2lip.video.io import probe, read_all

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_help_runs_and_states_every_default(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: diff2lip {command}")
    parser = _commands()[command]
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.required:
            continue
        if isinstance(action, argparse._StoreTrueAction | argparse._HelpAction):
            continue
        formatter = parser._get_formatter()
        formatter.add_argument(action)
        shown = " ".join(formatter.format_help().split())  # as --help prints it
        assert "default" in shown.lower(), (command, shown)


def test_every_command_with_progress_takes_both_spellings():
    for name, parser in _commands().items():
        flags = {o for a in parser._actions for o in a.option_strings}
        if "--quiet" in flags or "--no-progress" in flags:
            assert {"-q", "--quiet", "--no-progress"} <= flags, name


def test_unknown_option_gets_the_subcommands_usage_and_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "a.mp4", "b.wav", "-o", "c.mp4", "--crff", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: diff2lip generate") and "--crff (did you mean --crf?)" in err
    with pytest.raises(SystemExit):
        main(["batch", "rows.csv", "demo", "--no-shot-cuts"])
    assert "usage: diff2lip batch" in capsys.readouterr().err


def test_missing_checkpoint_names_the_bundled_and_the_paper_model(tmp_path, talking_clip, speech_wav, capsys):
    rc = main(["generate", str(talking_clip), str(speech_wav), "-o", str(tmp_path / "o.mp4"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "'demo'" in err and "'paper'" in err and "models/paper" in err


def test_wav2lip_spelling_and_the_bundled_model_by_name(tmp_path, talking_clip, speech_wav, capsys):
    out = tmp_path / "o.mp4"
    args = ["--face", talking_clip, "--audio", speech_wav, "--outfile", out, "--checkpoint", "demo"]
    args += ["--resize_factor", "1", "--wav2lip_batch_size", "4", "--face_det_batch_size", "8"]
    args += ["--box", "-1", "-1", "-1", "-1", "--pads", "0", "10", "0", "0", "--nosmooth", "--length", "video"]
    assert main(["generate", *map(str, args), "-q"]) == 0
    assert "no face was found" not in capsys.readouterr().err
    assert (probe(out).width, probe(out).height) == (176, 144)
    assert probe(out).num_frames == probe(talking_clip).num_frames
    assert main(["generate", "--face", "largest", str(talking_clip), "-o", str(out), "-q"]) == 2
    assert "--face-select largest" in capsys.readouterr().err  # the old face choice points to its new name


def test_batch_takes_every_per_job_option_and_row_columns(tmp_path, talking_clip, speech_wav, tiny_model_dir):
    manifest = tmp_path / "rows.csv"
    manifest.write_text(
        "video,audio,output,crf,box\n"
        f"{talking_clip},{speech_wav},a.mp4,0,40 20 136 116\n"
        f"{talking_clip},{speech_wav},b.mp4,,40 20 136 116\n"
    )
    args = [manifest, tiny_model_dir, "--crf", "30", "--blend", "hard", "--pads", "0", "0", "0", "0"]
    args += ["--length", "video", "--steps", "1", "--no-progress"]
    assert main(["batch", *map(str, args)]) == 0
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert a.stat().st_size > 3 * b.stat().st_size  # row a: crf 0 (its column), row b: --crf 30
    src, got = read_all(talking_clip).frames, read_all(a).frames
    assert np.array_equal(got[:, :, :36], src[:, :, :36])  # left of the box: the source as decoded
    manifest.write_text("video,audio,output,colour\nv.mp4,a.wav,o.mp4,red\n")
    assert main(["batch", str(manifest), str(tiny_model_dir), "-q"]) == 2  # unknown columns are errors


def _readme_commands() -> list[str]:
    """Every `diff2lip ...` command line of the README (code blocks and inline code)."""
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("diff2lip ") or " -m diff2lip " in line:
                lines.append(line)
    for code in re.findall(r"`(diff2lip [^`]+)`", text):
        placeholder = any(re.fullmatch(r"[A-Z][A-Z_]*", word) for word in code.split())  # TEACHER, K, DIR
        if "..." not in code and re.match(r"diff2lip [a-z-]+ ", code) and not placeholder:
            lines.append(code)
    return sorted(set(lines))


def test_every_readme_command_line_parses(monkeypatch):
    commands = _readme_commands()
    assert len(commands) > 15
    for line in commands:
        argv = shlex.split(line)
        argv = argv[argv.index("diff2lip") + 1 :]
        if "--help" in argv:
            continue  # (every --help runs in the test above)
        parser = build_parser()
        try:
            args, extras = parser.parse_known_args(argv)
        except SystemExit as e:
            pytest.fail(f"README command does not parse ({e}): {line}")
        assert not extras, f"README command has unknown arguments {extras}: {line}"
        assert getattr(args, "func", None) is not None, line
