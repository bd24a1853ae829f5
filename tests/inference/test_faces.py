"""Several people (issue 16): ``diff2lip faces`` ids and ``generate --face-id``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.video.face import FaceDetection, resize_frames
from diff2lip.video.io import VideoWriter, read_all
from diff2lip.video.people import merge_tracklets, track_people


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, carphone_mp4, astronaut) -> Path:
    """Two real faces side by side: the carphone man (moving, left) and the astronaut (still, right)."""
    left = read_all(carphone_mp4).frames[:16]  # (16, 144, 176, 3)
    right = np.repeat(resize_frames(astronaut[None, 40:300, 120:380], 144, 144), 16, axis=0)
    frames = np.concatenate([left, right], axis=2)  # (16, 144, 320, 3)
    out = tmp_path_factory.mktemp("people") / "two.mp4"
    with VideoWriter(out, width=320, height=144, fps=25, crf=12) as w:
        w.write(frames)
    return out


def test_people_get_stable_ids_in_order_of_appearance():
    a = [FaceDetection((10.0 + k, 10.0, 60.0 + k, 60.0), 1.0) for k in range(6)]
    b = FaceDetection((200.0, 20.0, 250.0, 70.0), 1.0)
    dets = [[a[0]], [a[1], b], [b, a[2]], [], [a[4], b], [a[5]]]  # b appears later; a missed in frame 3
    people = track_people(dets)
    assert [sorted(p.detections) for p in people] == [[0, 1, 2, 4, 5], [1, 2, 4]]
    assert track_people(dets[:3])[1].detections.keys() == {1, 2}  # a prefix gives the same ids
    assert len(track_people(dets, cuts=[4])) == 4  # nobody is carried across a cut


def test_tracklets_of_one_person_are_joined_by_appearance_never_when_on_screen_together():
    a = [FaceDetection((10.0, 10.0, 60.0, 60.0), 1.0)] * 3
    b = FaceDetection((200.0, 20.0, 250.0, 70.0), 1.0)
    dets = [[a[0]], [a[1]], [], [b], [b], [], [a[2]]]  # a; cut; b; cut; a again
    vec = {"a": np.eye(128)[0], "b": np.eye(128)[1]}  # distance sqrt(2) apart
    owner = {id(a[0]): "a", id(b): "b"}

    def describe(wanted):
        return {i: [vec[owner[id(f)]] + 0.002 * i for f in faces] for i, faces in wanted.items()}

    assert len(track_people(dets, cuts=[3, 6])) == 3  # continuity alone: three pieces
    people = track_people(dets, cuts=[3, 6], describe=describe)
    assert [sorted(p.detections) for p in people] == [[0, 1, 6], [3, 4]]
    assert [sorted(p.detections) for p in track_people(dets[:5], cuts=[3], describe=describe)] == [
        [0, 1],
        [3, 4],
    ]  # a prefix gives the same ids
    # two tracklets that look alike but share a frame are two people
    t = track_people([[a[0], b], [a[1], b]])
    assert len(merge_tracklets(t, [vec["a"], vec["a"]])) == 2
    assert len(merge_tracklets(t[:1] + t[:1], [vec["a"], vec["a"] + 0.1])) == 2  # overlap: itself
    far = track_people(dets, cuts=[3, 6])
    assert len(merge_tracklets(far, [vec["a"], vec["b"], None])) == 3  # unknown appearance: a new person


def test_a_real_face_keeps_its_id_across_cuts(tmp_path, carphone_mp4, astronaut, capsys):
    """carphone man | astronaut | carphone man again (cuts between): two people, not three."""
    man = read_all(carphone_mp4).frames  # (N, 144, 176, 3)
    her = np.repeat(resize_frames(astronaut[None, 30:310, 100:420], 144, 176), 20, axis=0)
    clip = tmp_path / "three_shots.mp4"
    with VideoWriter(clip, width=176, height=144, fps=25, crf=12) as w:
        w.write(np.concatenate([man[:20], her, man[40:60]]))
    doc = tmp_path / "faces.json"
    assert main(["faces", str(clip), "-o", str(tmp_path / "f.png"), "--json", str(doc), "-q"]) == 0
    people = json.loads(doc.read_text())["people"]
    assert len(json.loads(doc.read_text())["shots"]) == 3
    spans = [sorted(int(i) for i in p["frames"]) for p in people]
    assert len(people) == 2, spans
    assert spans[0][0] < 20 and spans[0][-1] >= 40 and 20 <= spans[1][0] <= spans[1][-1] < 40
    capsys.readouterr()
    assert main(["faces", str(clip), "-o", str(tmp_path / "f.png"), "--same-person", "0", "-q"]) == 0
    assert "3 people" in capsys.readouterr().out  # continuity alone splits the man at the cuts


def test_faces_command_and_face_id(tmp_path, two_people, tiny_model_dir, speech_wav, capsys):
    sheet, doc = tmp_path / "faces.png", tmp_path / "faces.json"
    assert main(["faces", str(two_people), "-o", str(sheet), "--json", str(doc), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "2 people in 16 frames" in printed and sheet.is_file()
    people = json.loads(doc.read_text())["people"]
    assert [p["id"] for p in people] == [0, 1]
    boxes = {p["id"]: np.median(np.array(list(p["frames"].values())), axis=0).astype(int) for p in people}

    def lower_change(got, src, k):  # mean change in the lower half of person k's face box
        x1, y1, x2, y2 = boxes[k]
        y = (y1 + y2) // 2
        return np.abs(
            got[:, y + 2 : y2 - 2, x1 + 4 : x2 - 4] - src[:, y + 2 : y2 - 2, x1 + 4 : x2 - 4]
        ).mean()

    src = read_all(two_people).frames.astype(int)
    for k in (0, 1):
        out = tmp_path / f"id{k}.mp4"
        args = [two_people, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--length", "video"]
        assert main(["generate", *map(str, args), "--face-id", str(k), "-q", "--steps", "2"]) == 0
        got = read_all(out).frames.astype(int)
        assert lower_change(got, src, k) > 15  # this person's mouth is re-drawn (a tiny random model)
        assert lower_change(got, src, 1 - k) < 5  # the other person is untouched (codec noise only)
    assert main(["generate", str(two_people), str(speech_wav), "-o", str(tmp_path / "x.mp4"),
                 "--checkpoint", str(tiny_model_dir), "--face-id", "5", "-q"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--face-id 5: 2 people found" in err and "diff2lip faces" in err


def test_two_speakers_in_one_pass(tmp_path, two_people, tiny_model_dir, speech_wav, capsys):
    """``--face-id 0`` speaks the main audio and ``--audio-for 1=other.wav`` the other speech: each mouth is
    what a one-person run with that person's speech draws."""
    from tests.conftest import speak

    other = speak("Numbers: one, two, three, four, five.", tmp_path / "other.wav", voice="en+f3")
    doc = tmp_path / "faces.json"
    assert main(["faces", str(two_people), "-o", str(tmp_path / "f.png"), "--json", str(doc), "-q"]) == 0
    people = json.loads(doc.read_text())["people"]
    boxes = {p["id"]: np.median(np.array(list(p["frames"].values())), axis=0).astype(int) for p in people}

    def lower(frames, k):  # person k's lower face
        x1, y1, x2, y2 = boxes[k]
        return frames[:, (y1 + y2) // 2 + 2 : y2 - 2, x1 + 4 : x2 - 4].astype(int)

    def run(name, audio, *extra):
        out = tmp_path / name
        args = [two_people, audio, "-o", out, "--checkpoint", tiny_model_dir, "--length", "video", *extra]
        assert main(["generate", *map(str, args), "-q", "--steps", "2", "--crf", "0"]) == 0  # lossless
        return read_all(out).frames

    both = run("both.mp4", speech_wav, "--face-id", "0", "--audio-for", f"1={other}")
    assert "person 0 (main audio)" in capsys.readouterr().out
    alone0 = run("a0.mp4", speech_wav, "--face-id", "0")
    alone1 = run("a1.mp4", other, "--face-id", "1")
    wrong1 = run("w1.mp4", speech_wav, "--face-id", "1")  # person 1 with the main audio instead
    src = read_all(two_people).frames
    assert np.abs(lower(both, 0) - lower(src, 0)).mean() > 15  # both mouths re-drawn
    assert np.abs(lower(both, 1) - lower(src, 1)).mean() > 15
    assert np.abs(lower(both, 0) - lower(alone0, 0)).mean() == 0  # each with its own speech
    own, wrong = (
        np.abs(lower(both, 1) - lower(alone1, 1)).mean(),
        np.abs(lower(both, 1) - lower(wrong1, 1)).mean(),
    )
    assert own == 0 and wrong > 0.3, (own, wrong)  # (a tiny random model: speech changes little)
    # without --face-id the main audio drives nobody: person 0 is untouched
    only1 = run("only1.mp4", speech_wav, "--audio-for", f"1={other}")
    assert np.abs(lower(only1, 0) - lower(src, 0)).mean() < 5
    assert main(["generate", str(two_people), str(speech_wav), "-o", str(tmp_path / "x.mp4"), "--checkpoint",
                 str(tiny_model_dir), "--audio-for", f"7={other}", "-q"]) == 2  # fmt: skip
    assert "--audio-for 7: 2 people found" in capsys.readouterr().err
