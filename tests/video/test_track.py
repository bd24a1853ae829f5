"""Face tracking on synthetic detection lists, and face-track files (diff2lip.video.track)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diff2lip.errors import Diff2LipError
from diff2lip.video.face import FaceDetection
from diff2lip.video.track import FaceTrack, fill_missing_boxes, smooth_boxes, track_faces


def det(x1, y1, x2, y2, score=1.0) -> FaceDetection:
    return FaceDetection(box=(float(x1), float(y1), float(x2), float(y2)), score=score)


def official_pipeline(detections, frame_size, pads):
    """Transcription of the official generate.py face_detect: first box, clip >= 0, int, pad, smooth (int)."""
    height, width = frame_size
    pady1, pady2, padx1, padx2 = pads
    results = []
    for faces in detections:
        d = np.clip(np.array([*faces[0].box, faces[0].score]), 0, None)
        x1, y1, x2, y2 = map(int, d[:-1])
        results.append(
            [max(0, x1 - padx1), max(0, y1 - pady1), min(width, x2 + padx2), min(height, y2 + pady2)]
        )
    boxes = np.array(results)
    for i in range(len(boxes)):  # get_smoothened_boxes(boxes, T=5), in place on an int array
        window = boxes[len(boxes) - 5 :] if i + 5 > len(boxes) else boxes[i : i + 5]
        boxes[i] = np.mean(window, axis=0)
    return boxes


def test_padding_clipped_to_frame():
    dets = [[det(10, 5, 110, 95)], [det(50, 40, 70, 60)]]  # two unrelated boxes: choose per frame
    track = track_faces(dets, (100, 120), pads=(10, 10, 20, 20), smooth="none", choose="score")
    assert track.boxes[0].tolist() == [0, 0, 120, 100]
    track = track_faces(dets, (100, 120), pads=(3, 4, 5, 6), smooth="none", choose="score")
    # y1 = 40 - 3, y2 = 60 + 4, x1 = 50 - 5, x2 = 70 + 6
    assert track.boxes[1].tolist() == [45, 37, 76, 64]
    assert track.metadata["pads"] == [3, 4, 5, 6]


def test_detection_outside_frame_is_no_face():
    track = track_faces([[det(200, 10, 240, 50)], [det(10, 10, 50, 50)]], (100, 120), smooth="none")
    assert track.has_face.tolist() == [False, True]


def test_mean5_smoothing_hand_computed():
    v = [0, 10, 20, 30, 40, 50, 100]
    dets = [[det(x, x, x + 200, x + 200)] for x in v]
    track = track_faces(dets, (1000, 1000))
    # i <= 2: mean of the next 5; i >= 3: the last 5 boxes, updated in place as the official loop does
    expected = [20, 30, 48, 53.6, 58.32, 61.984, 64.3808]
    assert np.allclose(track.boxes[:, 0], expected, rtol=0, atol=1e-9)
    assert np.allclose(track.boxes[:, 3], np.array(expected) + 200, rtol=0, atol=1e-9)
    assert np.array_equal(track_faces(dets, (1000, 1000), smooth="none").boxes[:, 1], v)


def test_mean5_integer_mode_hand_computed():
    v = [0, 10, 20, 30, 40, 50, 101]
    dets = [[det(x + 0.7, x, x + 200, x + 200)] for x in v]  # int() truncates the .7
    track = track_faces(dets, (1000, 1000), integer=True)
    assert track.boxes[:, 0].tolist() == [20, 30, 48, 53, 58, 62, 64]


def test_integer_mode_matches_official_pipeline():
    rng = np.random.default_rng(3)
    n, frame_size, pads = 23, (360, 480), (0, 10, 4, 4)
    dets = []
    for _ in range(n):
        x1, y1 = rng.uniform(-5, 300), rng.uniform(-5, 200)
        size = rng.uniform(60, 120)
        faces = [det(x1, y1, x1 + size, y1 + size, score=0.99), det(5, 5, 30, 30, score=0.6)]
        dets.append(faces)
    dets[4][0] = det(-3.5, -2.2, 90.9, 100.5, score=0.99)  # clipped at 0 before int(), then padded
    track = track_faces(dets, frame_size, pads=pads, choose="score", integer=True)
    assert np.array_equal(track.boxes, official_pipeline(dets, frame_size, pads))
    assert np.array_equal(track.int_boxes(), track.boxes.astype(np.int64))


def test_smooth_boxes_short_run_uses_whole_run():
    boxes = np.array([[0.0] * 4, [3.0] * 4, [6.0] * 4])
    # i=0: mean(0,3,6)=3; i=1: mean(3,3,6)=4; i=2: mean(3,4,6)=13/3
    assert np.allclose(smooth_boxes(boxes)[:, 0], [3, 4, 13 / 3])


def test_gap_bridging_and_long_gaps():
    a, b = det(0, 0, 40, 40), det(30, 60, 70, 100)
    dets = [[a], [], [], [b]]
    track = track_faces(dets, (200, 200), smooth="none", choose="score")
    assert np.allclose(track.boxes[1], [10, 20, 50, 60]) and np.allclose(track.boxes[2], [20, 40, 60, 80])
    assert track.missing_ranges() == []
    long = [[], [a]] + [[]] * 6 + [[b], []]
    track = track_faces(long, (200, 200), smooth="none", max_gap=5, choose="score")
    assert track.has_face.tolist() == [False, True] + [False] * 6 + [True, False]
    assert track.missing_ranges() == [(0, 0), (2, 7), (9, 9)]
    track = track_faces(long, (200, 200), smooth="none", max_gap=6, choose="score")
    assert track.missing_ranges() == [(0, 0), (9, 9)]
    assert track_faces(dets, (200, 200), smooth="none", max_gap=1, choose="score").missing_ranges() == [
        (1, 2)
    ]


def test_smoothing_never_crosses_a_gap():
    a, b = det(0, 0, 40, 40), det(100, 100, 140, 140)
    dets = [[a]] * 3 + [[]] * 7 + [[b]] * 3
    track = track_faces(dets, (200, 200), max_gap=5, choose="score")
    assert np.array_equal(track.boxes[:3], np.tile([0, 0, 40, 40], (3, 1)))
    assert np.array_equal(track.boxes[10:], np.tile([100, 100, 140, 140], (3, 1)))
    assert track.missing_ranges() == [(3, 9)]


def test_choose_largest_central_score_track():
    big = det(0, 0, 100, 100, score=0.6)  # large, off-centre
    small = det(90, 90, 110, 110, score=0.9)  # small, at the centre of the 200x200 frame
    frames = [[big, small]]
    kw = {"smooth": "none"}
    assert track_faces(frames, (200, 200), choose="largest", **kw).boxes[0].tolist() == [0, 0, 100, 100]
    assert track_faces(frames, (200, 200), choose="central", **kw).boxes[0].tolist() == [90, 90, 110, 110]
    assert track_faces(frames, (200, 200), choose="score", **kw).boxes[0].tolist() == [90, 90, 110, 110]
    # track follows the face seen first, even when a larger one appears
    seq = [[det(150, 150, 170, 170)], [big, det(152, 150, 172, 170)], [det(154, 150, 174, 170), big]]
    tracked = track_faces(seq, (200, 200), choose="track", **kw).boxes
    assert tracked[:, 0].tolist() == [150, 152, 154]
    # largest (and central) pick the person once and then follow them too: a larger face appearing later
    # is another person; score chooses in every frame (the official code)
    assert track_faces(seq, (200, 200), choose="largest", **kw).boxes[:, 0].tolist() == [150, 152, 154]
    scored = [[det(150, 150, 170, 170, 0.5)], [big, det(152, 150, 172, 170, 0.5)]]  # big: score 0.6
    assert track_faces(scored, (200, 200), choose="score", **kw).boxes[:, 0].tolist() == [150, 0]


def test_the_followed_person_is_never_handed_to_another_face():
    """Megamind's failure: the main face is missed for a few frames while a blurred background face is
    found; the track must pass those frames (or bridge them from the main face), never jump."""
    main, other = det(100, 100, 200, 200), det(400, 40, 440, 80)
    dets = [[main, other]] * 10 + [[other]] * 4 + [[det(104, 100, 204, 200), other]] * 6
    track = track_faces(dets, (480, 640), smooth="mean5", max_gap=5)
    assert track.has_face.all()  # the 4 missed frames are bridged between the main face's boxes
    assert (track.boxes[:, 0] >= 100).all() and (track.boxes[:, 0] <= 104).all()  # never near x = 400
    assert track.metadata["other_faces_passed_over"] == 4
    long_miss = [[main, other]] * 5 + [[other]] * 8 + [[main, other]] * 5
    track = track_faces(long_miss, (480, 640), smooth="mean5", max_gap=5)
    assert track.missing_ranges() == [(5, 12)]  # passed through, not given to the other face
    assert (track.boxes[track.has_face, 0] == 100).all()  # no averaging across the gap or the identities
    # a person gone for longer than reacquire_after frames: the choice is made again
    gone = [[main]] * 3 + [[]] * 6 + [[other]] * 3
    track = track_faces(gone, (480, 640), smooth="none", max_gap=5, reacquire_after=5)
    assert track.boxes[-1].tolist() == [400, 40, 440, 80]


def test_faces_below_the_minimum_size_are_ignored():
    dets = [[det(0, 0, 30, 30)], [det(0, 0, 80, 80)]]
    track = track_faces(dets, (200, 200), smooth="none", choose="score", min_face=40)
    assert track.has_face.tolist() == [False, True]


def test_bad_options_raise():
    with pytest.raises(Diff2LipError, match="smoothing"):
        track_faces([], (10, 10), smooth="mean3")
    with pytest.raises(Diff2LipError, match="choice"):
        track_faces([], (10, 10), choose="first")
    with pytest.raises(Diff2LipError, match="pads"):
        track_faces([], (10, 10), pads=(1, 2))


def test_summary_and_missing_ranges():
    boxes = np.tile([1.0, 2.0, 30.0, 40.0], (120, 1))
    boxes[10:25] = np.nan
    boxes[80:82] = np.nan
    boxes[100, 2] = np.nan  # a partly-NaN row counts as no face
    track = FaceTrack(boxes, (144, 176))
    assert track.missing_ranges() == [(10, 24), (80, 81), (100, 100)]
    assert track.summary() == "no face in frames 10–24, 80–81, 100 (18 of 120)"
    assert FaceTrack(boxes[:10], (144, 176)).summary() == "face found in all 10 frames"
    assert FaceTrack(np.full((3, 4), np.nan), (144, 176)).summary() == "no face in frames 0–2 (3 of 3)"


def test_json_round_trip(tmp_path):
    dets = [[det(10.25, 20.5, 50.125, 70)], [], [det(12, 22, 52, 72)]] + [[]] * 8
    track = track_faces(dets, (144, 176), pads=(0, 10, 0, 0), metadata={"detector": "dlib"})
    path = track.save(tmp_path / "sub" / "clip.facetrack.json")
    loaded = FaceTrack.load(path)
    assert np.array_equal(loaded.boxes, track.boxes, equal_nan=True)
    assert loaded.frame_size == (144, 176)
    assert loaded.metadata == track.metadata and loaded.metadata["detector"] == "dlib"
    assert loaded.summary() == track.summary() == "no face in frames 3–10 (8 of 11)"
    data = json.loads(path.read_text())
    assert data["format"] == "diff2lip-face-track" and data["version"] == 1 and data["boxes"][3] is None
    assert [p.name for p in path.parent.iterdir()] == ["clip.facetrack.json"]  # no temp file left


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a face track"),
        ('{"format": "diff2lip-face-track", "version": 99}', "unsupported face track version"),
        (
            '{"format": "diff2lip-face-track", "version": 1, "frame_size": [10, 10], "boxes": [[1, 2]]}',
            "malformed",
        ),
        ('{"format": "diff2lip-face-track", "version": 1, "boxes": []}', "malformed"),
        (
            '{"format": "diff2lip-face-track", "version": 1, "frame_size": [10, 10], "boxes": [], "num_frames": 3}',
            "num_frames",
        ),
    ],
)
def test_bad_track_files(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(Diff2LipError, match=match) as err:
        FaceTrack.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_track_file(tmp_path):
    with pytest.raises(Diff2LipError, match="not found"):
        FaceTrack.load(tmp_path / "none.json")


def test_int_boxes_rounding_and_clipping():
    boxes = np.array(
        [[10.4, 20.5, 30.6, 40.49], [np.nan] * 4, [-3.0, -1.0, 500.0, 99.7], [5.2, 5.2, 5.3, 5.3]]
    )
    ints = FaceTrack(boxes, (100, 120)).int_boxes()
    assert ints.dtype == np.int64
    assert ints.tolist() == [[10, 21, 31, 40], [-1, -1, -1, -1], [0, 0, 120, 100], [5, 5, 6, 6]]


def test_fill_missing_boxes_uses_nearest_face_box():
    boxes = np.array([[-1] * 4, [1, 1, 5, 5], [-1] * 4, [-1] * 4, [-1] * 4, [2, 2, 6, 6], [-1] * 4])
    filled = fill_missing_boxes(boxes)
    assert filled[:, 0].tolist() == [1, 1, 1, 1, 2, 2, 2]  # frame 3 ties: the earlier box
    assert boxes[0, 0] == -1  # the input is not modified
    track = FaceTrack(np.where(boxes < 0, np.nan, boxes), (10, 10))  # NaN rows work the same way
    np.testing.assert_array_equal(fill_missing_boxes(track.boxes), filled)
    np.testing.assert_array_equal(fill_missing_boxes(track.int_boxes(), track.has_face), filled)
    none = np.full((3, 4), -1)
    np.testing.assert_array_equal(fill_missing_boxes(none), none)  # no face anywhere: unchanged


def test_from_box_and_compatibility():
    track = FaceTrack.from_box((-10, 20, 90, 300), num_frames=4, frame_size=(144, 176))
    assert track.boxes.shape == (4, 4) and track.boxes[3].tolist() == [0, 20, 90, 144]
    assert track.summary() == "face found in all 4 frames"
    track.check_compatible(4, (144, 176))
    with pytest.raises(Diff2LipError, match="the video is 320x240"):
        track.check_compatible(4, (240, 320))
    with pytest.raises(Diff2LipError, match="the video has 5"):
        track.check_compatible(5, (144, 176))
    with pytest.raises(Diff2LipError, match="outside"):
        FaceTrack.from_box((200, 0, 300, 50), num_frames=4, frame_size=(144, 176))


def test_shot_cuts_are_found_and_nothing_crosses_them(carphone_mp4, astronaut):
    from diff2lip.video.face import resize_frames
    from diff2lip.video.io import read_all
    from diff2lip.video.shots import ShotDetector, shot_ranges

    a = read_all(carphone_mp4).frames[:20]  # (20, 144, 176, 3)
    b = np.repeat(resize_frames(astronaut[None], 144, 176), 20, axis=0)  # another picture: a cut at 20
    shots = ShotDetector(min_shot=5)
    for chunk in (a[:7], a[7:], b[:3], b[3:]):  # fed in chunks of any size
        shots.feed(chunk)
    assert shots.cuts == [20]
    assert shot_ranges(shots.cuts, 40) == [(0, 19), (20, 39)]
    # the person of the first shot is not carried into the second, and no box is smoothed across
    left, right = det(20, 20, 80, 80), det(60, 30, 120, 90)  # close enough to pass as one person
    dets = [[left]] * 20 + [[right]] * 20
    one = track_faces(dets, (144, 176), max_gap=5)
    cut = track_faces(dets, (144, 176), max_gap=5, cuts=shots.cuts)
    assert not np.array_equal(one.boxes[17:20], np.tile([20, 20, 80, 80], (3, 1)))  # without: smoothed across
    assert np.array_equal(cut.boxes[:20], np.tile([20, 20, 80, 80], (20, 1)))
    assert np.array_equal(cut.boxes[20:], np.tile([60, 30, 120, 90], (20, 1)))
    assert cut.metadata["shots"] == [[0, 19], [20, 39]]


def _with_yaw(box, fraction):
    """A detection whose nose tip (landmark 30) lies at ``fraction`` of the way between the jaw's ends."""
    marks = np.zeros((68, 2))
    marks[0, 0], marks[16, 0] = box[0], box[2]
    marks[30, 0] = box[0] + fraction * (box[2] - box[0])
    return FaceDetection(box=tuple(float(v) for v in box), score=1.0, landmarks=marks)


def test_faces_turned_beyond_max_yaw_pass_through_and_are_counted():
    frontal, turned = _with_yaw((0, 0, 100, 100), 0.5), _with_yaw((0, 0, 100, 100), 0.95)
    assert frontal.yaw == pytest.approx(0.0) and turned.yaw == pytest.approx(np.degrees(np.arcsin(0.9)))
    assert det(0, 0, 10, 10).yaw is None  # no landmarks: no estimate
    dets = [[frontal]] * 3 + [[turned]] * 10 + [[frontal]] * 3
    track = track_faces(dets, (200, 200), smooth="none", max_yaw=45)
    assert track.missing_ranges() == [(3, 12)] and track.metadata["turned_away"] == 10
    assert track_faces(dets, (200, 200), smooth="none").has_face.all()  # no limit by default
