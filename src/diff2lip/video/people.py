"""Every face in a video, as people with stable ids (``diff2lip faces``, ``generate --face-id``).

Two steps. **Continuity**: detections are linked frame to frame into tracklets: a face continues a tracklet
seen up to ``reacquire_after`` frames earlier when its centre and size are continuous with that tracklet's
last box (the same test as the single-person tracker, :func:`~diff2lip.video.track.track_faces`), pairs are
linked greedily, closest first, and a face that continues nobody starts a new tracklet; no tracklet
crosses a shot cut. **Appearance**: a few faces of each tracklet are described with dlib's face descriptor
(:class:`~diff2lip.video.face.FaceDescriber`), and a tracklet joins an earlier person whose descriptor lies
within :data:`~diff2lip.video.face.SAME_PERSON` and who is never on screen at the same time — so a person
keeps one id after a long gap or a cut. Ids are given in order of first appearance and every decision
looks only at earlier tracklets, so the ids of a prefix of the video are those of the whole video:
``generate --face-id K`` (which tracks only the frames it uses) finds the person ``diff2lip faces``
showed as K.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from diff2lip.video.face import SAME_PERSON, FaceDescriber, FaceDetection, FaceDetector
from diff2lip.video.track import continuation_distance

__all__ = [
    "Person",
    "detections_of",
    "identify_people",
    "link_tracklets",
    "merge_tracklets",
    "track_people",
    "video_describer",
]


@dataclass
class Person:
    """One person: their detection in each frame where they were found."""

    id: int
    detections: dict[int, FaceDetection] = field(default_factory=dict)

    @property
    def first(self) -> int:
        return min(self.detections)

    @property
    def last(self) -> int:
        return max(self.detections)

    def best_frame(self) -> int:
        """The frame where this person's face is largest (for a thumbnail)."""
        return max(self.detections, key=lambda i: self.detections[i].area)


def link_tracklets(
    detections: Sequence[Sequence[FaceDetection]],
    *,
    cuts: Sequence[int] = (),
    reacquire_after: int = 25,
    min_face: float = 0.0,
) -> list[Person]:
    """Link per-frame detections into tracklets by continuity alone (never across a cut); sorted by first
    appearance."""
    people: list[Person] = []
    active: list[Person] = []
    cut_set = set(cuts)
    for i, faces in enumerate(detections):
        if i in cut_set:
            active = []
        active = [p for p in active if i - p.last <= reacquire_after]
        faces = [f for f in faces if f.width >= min_face]
        pairs = []
        for fi, face in enumerate(faces):
            for p in active:
                d = continuation_distance(face.box, p.detections[p.last].box, i - p.last)
                if d is not None:
                    pairs.append((d, fi, p.id))
        taken_faces: set[int] = set()
        taken_people: set[int] = set()
        for _, fi, pid in sorted(pairs):
            if fi in taken_faces or pid in taken_people:
                continue
            people[pid].detections[i] = faces[fi]
            taken_faces.add(fi)
            taken_people.add(pid)
        for fi, face in enumerate(faces):
            if fi not in taken_faces:
                person = Person(len(people), {i: face})
                people.append(person)
                active.append(person)
    return people


Describe = Callable[[dict[int, list[FaceDetection]]], dict[int, list[np.ndarray]]]
"""Given the faces wanted in each frame (by frame index), their ``(128,)`` descriptors in the same order
(:func:`video_describer`)."""


def merge_tracklets(
    tracklets: Sequence[Person], means: Sequence[np.ndarray | None], same_person: float = SAME_PERSON
) -> list[Person]:
    """Join tracklets of one person: in order of first appearance, each tracklet joins the person whose
    closest tracklet descriptor (``means[k]``, ``None`` = unknown) lies within ``same_person`` — the
    closest such person that is never on screen at the same time — or starts a new person."""
    people: list[Person] = []
    members: list[list[int]] = []  # tracklet indices of each person
    for k, tracklet in enumerate(tracklets):
        best: tuple[float, int] | None = None
        if means[k] is not None:
            for pid, person in enumerate(people):
                if person.detections.keys() & tracklet.detections.keys():
                    continue  # both on screen in one frame: two people
                known = [means[j] for j in members[pid] if means[j] is not None]
                d = min((float(np.linalg.norm(means[k] - m)) for m in known), default=math.inf)
                if d < same_person and (best is None or d < best[0]):
                    best = (d, pid)
        if best is None:
            people.append(Person(len(people), dict(tracklet.detections)))
            members.append([k])
        else:
            people[best[1]].detections.update(tracklet.detections)
            members[best[1]].append(k)
    return people


def track_people(
    detections: Sequence[Sequence[FaceDetection]],
    *,
    cuts: Sequence[int] = (),
    reacquire_after: int = 25,
    min_face: float = 0.0,
    describe: Describe | None = None,
    same_person: float = SAME_PERSON,
    samples: int = 3,
) -> list[Person]:
    """Every person of a video (see the module docstring); sorted by id.

    Without ``describe``, people are the continuity tracklets. With it, the ``samples`` largest faces of each
    tracklet are described and tracklets of one person are joined (:func:`merge_tracklets`).
    """
    tracklets = link_tracklets(detections, cuts=cuts, reacquire_after=reacquire_after, min_face=min_face)
    if describe is None or len(tracklets) < 2:
        return tracklets
    chosen = [sorted(t.detections, key=lambda i, t=t: -t.detections[i].area)[:samples] for t in tracklets]
    wanted: dict[int, list[FaceDetection]] = {}
    for t, frames in zip(tracklets, chosen):
        for i in frames:
            wanted.setdefault(i, []).append(t.detections[i])
    vectors = describe(wanted)
    means: list[np.ndarray | None] = []
    for t, frames in zip(tracklets, chosen):
        found = [vectors[i][wanted[i].index(t.detections[i])] for i in frames if i in vectors]
        means.append(np.mean(found, axis=0) if found else None)
    return merge_tracklets(tracklets, means, same_person)


def video_describer(frames: Iterable) -> Describe:
    """A :data:`Describe` that reads the video once more (``frames`` — a reader — yields chunks with
    ``frames`` and ``start_index``) and describes the faces wanted, stopping after the last one; dlib's
    descriptor model is loaded on the first call only."""

    def describe(wanted: dict[int, list[FaceDetection]]) -> dict[int, list[np.ndarray]]:
        out: dict[int, list[np.ndarray]] = {}
        if not wanted:
            return out
        describer = FaceDescriber()
        last = max(wanted)
        for chunk in frames:
            for j, frame in enumerate(chunk.frames):
                i = chunk.start_index + j
                if i in wanted:
                    out[i] = describer.describe(frame, wanted[i])
            if chunk.start_index + len(chunk.frames) > last:
                break
        return out

    return describe


def identify_people(
    detections: Sequence[Sequence[FaceDetection]],
    frames: Iterable,
    *,
    cuts: Sequence[int] = (),
    min_face: float = 0.0,
    same_person: float | None = SAME_PERSON,
) -> list[Person]:
    """:func:`track_people` with the appearance read from the video's own ``frames`` (a reader);
    ``same_person=None``: by continuity alone. What ``diff2lip faces`` and ``generate --face-id`` share."""
    if same_person is None:
        return track_people(detections, cuts=cuts, min_face=min_face)
    describe = video_describer(frames)
    return track_people(detections, cuts=cuts, min_face=min_face, describe=describe, same_person=same_person)


def detections_of(person: Person, num_frames: int) -> list[list[FaceDetection]]:
    """Per-frame detection lists holding only ``person``'s face (for the single-person tracker)."""
    return [[person.detections[i]] if i in person.detections else [] for i in range(num_frames)]


THUMB = 128


def find_people(
    path: str,
    detector: FaceDetector,
    *,
    chunk_size: int = 16,
    shots: bool = True,
    min_face: float = 0.0,
    same_person: float | None = SAME_PERSON,
    progress: Callable[[int, int | None], object] | None = None,
) -> tuple[list[Person], list[tuple[int, int]], int, list]:
    """Detect and link every face of a video file (``same_person=None``: by continuity alone).

    Returns ``(people, shot ranges, number of frames, thumbnails)`` with one ``(THUMB, THUMB, 3)`` uint8
    crop per person (its largest face, squared and padded by a quarter of its size).
    """
    from diff2lip.errors import Diff2LipError
    from diff2lip.video.face import resize_frames
    from diff2lip.video.io import VideoReader
    from diff2lip.video.shots import ShotDetector, shot_ranges

    reader = VideoReader(path, chunk_size=chunk_size)
    if reader.info.is_image:
        raise Diff2LipError("expected a video; a still image has one frame (use generate directly)", path)
    cut_finder = ShotDetector() if shots else None
    detections: list = []
    for chunk in reader:
        detections.extend(detector.detect(chunk.frames))
        if cut_finder is not None:
            cut_finder.feed(chunk.frames)
        if progress is not None:
            progress(len(chunk), reader.num_frames)
    cuts = cut_finder.cuts if cut_finder is not None else []
    people = identify_people(detections, reader, cuts=cuts, min_face=min_face, same_person=same_person)
    wanted = {p.best_frame(): [] for p in people}
    for p in people:
        wanted[p.best_frame()].append(p)
    thumbs: list = [None] * len(people)
    for chunk in reader:  # a second pass for the thumbnails
        for j, frame in enumerate(chunk.frames):
            for p in wanted.get(chunk.start_index + j, []):
                x1, y1, x2, y2 = p.detections[chunk.start_index + j].box
                side = 1.25 * max(x2 - x1, y2 - y1)
                cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
                h, w = frame.shape[:2]
                a, b = int(max(0, cy - side / 2)), int(min(h, cy + side / 2))
                c, d = int(max(0, cx - side / 2)), int(min(w, cx + side / 2))
                thumbs[p.id] = resize_frames(np.ascontiguousarray(frame[a:b, c:d])[None], THUMB, THUMB)[0]
    return people, shot_ranges(cuts, len(detections)), len(detections), thumbs


def contact_sheet(people: list[Person], thumbs: list, columns: int = 6) -> object:
    """A PIL image: one thumbnail per person with its id and frame range underneath."""
    from PIL import Image, ImageDraw

    columns = max(1, min(columns, len(people)))
    rows = max(1, math.ceil(len(people) / columns))
    label = 28
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + label)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for p, thumb in zip(people, thumbs):
        x, y = (p.id % columns) * THUMB, (p.id // columns) * (THUMB + label)
        if thumb is not None:
            sheet.paste(Image.fromarray(thumb), (x, y))
        draw.text((x + 4, y + THUMB + 2), f"id {p.id}", fill=(255, 255, 255))
        draw.text((x + 4, y + THUMB + 14), f"frames {p.first}-{p.last}", fill=(200, 200, 200))
    return sheet
