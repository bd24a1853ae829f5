"""Face detection on real media: dlib HOG + 68 landmarks, offline (diff2lip.video.face)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from diff2lip.errors import Diff2LipError
from diff2lip.video.face import (
    DLIB_EXPAND,
    DlibDetector,
    FaceDetection,
    FaceDetector,
    create_detector,
    face_models_dir,
    resize_frames,
)

# Hand-noted from the photo: cheek to cheek, eyebrows to chin; mouth centre between the lip corners.
ASTRONAUT_FACE = (180.0, 80.0, 272.0, 178.0)
ASTRONAUT_MOUTH = (222.0, 145.0)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector(expand=(0, 0, 0, 0))  # dlib's raw boxes (the hand-noted box is one)


def test_default_expansion_grows_dlib_box_to_s3fd_like_framing(detector, astronaut):
    raw = detector.detect(astronaut[None])[0][0]
    grown = DlibDetector(landmarks=False).detect(astronaut[None])[0][0]
    w, h = raw.width, raw.height
    top, bottom, left, right = DLIB_EXPAND
    expected = (raw.box[0] - left * w, raw.box[1] - top * h, raw.box[2] + right * w, raw.box[3] + bottom * h)
    np.testing.assert_allclose(grown.box, expected, atol=1e-9)
    assert grown.box[3] - raw.box[3] > 15  # reaches below the chin
    np.testing.assert_array_equal(grown.landmarks is None, True)
    with pytest.raises(Diff2LipError, match="expand"):
        DlibDetector(expand=(0.1, -0.1, 0, 0))


def test_models_ship_in_package():
    folder = face_models_dir()
    assert (folder / "shape_predictor_68_face_landmarks.dat").is_file()
    assert (folder / "mmod_human_face_detector.dat").is_file()


def test_astronaut_one_face_with_landmarks(detector, astronaut):
    assert isinstance(detector, FaceDetector)
    (faces,) = detector.detect(astronaut[None])
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.6, face.box
    assert face.score > 0.5
    lm = face.landmarks
    assert lm.shape == (68, 2)
    # jaw points may reach a little past dlib's box (it ends at the chin): allow 15% of the box size
    x1, y1, x2, y2 = face.box
    mx, my = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
    assert np.all(
        (lm[:, 0] >= x1 - mx) & (lm[:, 0] <= x2 + mx) & (lm[:, 1] >= y1 - my) & (lm[:, 1] <= y2 + my)
    )
    # the 20 mouth points (48..67) sit around the hand-noted mouth; eyes (36..47) are above the mouth
    assert np.hypot(*(lm[48:68].mean(axis=0) - ASTRONAUT_MOUTH)) < 8.0
    assert lm[36:48, 1].max() < lm[48:68, 1].min()


def test_single_frame_is_promoted(detector, astronaut):
    assert len(detector.detect(astronaut)) == 1


def test_downscaled_detection_maps_boxes_back(astronaut):
    big = resize_frames(astronaut[None], 1024, 1024)  # (1, 1024, 1024, 3)
    full = DlibDetector(landmarks=False, downscale_to=None).detect(astronaut[None])[0][0]
    (faces,) = DlibDetector(landmarks=False, downscale_to=512).detect(big)
    assert len(faces) == 1 and faces[0].landmarks is None
    assert np.allclose(faces[0].box, np.array(full.box) * 2, atol=8.0), (faces[0].box, full.box)


def test_blank_frames_have_no_face(detector):
    frames = np.stack([np.full((144, 176, 3), v, np.uint8) for v in (0, 128, 255)])
    assert detector.detect(frames) == [[], [], []]


def test_carphone_face_in_most_frames(detector, carphone_mp4):
    with av.open(str(carphone_mp4)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 20:
                break
    found = detector.detect(np.stack(frames))
    assert len(found) == 20
    assert sum(len(f) >= 1 for f in found) >= 18
    for faces in found:
        for face in faces:
            cx, cy = face.center  # the man's face is in the middle of the 176x144 frame
            assert 50 < cx < 126 and 30 < cy < 110, face.box


def test_bad_frames_raise(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((1, 8, 8, 3), np.float32))


def test_create_detector_names(tmp_path):
    assert isinstance(create_detector("dlib", landmarks=False), DlibDetector)
    with pytest.raises(Diff2LipError, match="unknown face detector"):
        create_detector("yunet")
    with pytest.raises(Diff2LipError, match=r"s3fd\.pth"):
        create_detector("s3fd")
    with pytest.raises(Diff2LipError, match="not found"):
        create_detector("s3fd", weights_path=tmp_path / "missing.pth")
    with pytest.raises(Diff2LipError, match="not found"):
        DlibDetector(models_dir=tmp_path)


def test_face_detection_geometry():
    f = FaceDetection(box=(10.0, 20.0, 50.0, 100.0), score=1.0)
    assert (f.width, f.height, f.area, f.center) == (40.0, 80.0, 3200.0, (30.0, 60.0))


def test_dlib_cnn_finds_astronaut(astronaut):
    detector = create_detector("dlib-cnn", upsample=0, downscale_to=384, landmarks=False, expand=(0, 0, 0, 0))
    (faces,) = detector.detect(astronaut[None])
    assert len(faces) == 1
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.6, faces[0].box
