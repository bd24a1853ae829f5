"""The synthetic talking-face corpus (``diff2lip synth``; DESIGN.md §7, issue 4).

No real talking-face data can be downloaded here, yet training must be *proven* to learn lip-sync on a
CPU. This module makes a corpus whose mouths are driven by the speech and nothing else:

- **speech**: ``espeak-ng`` reads random sentences (5–12 words from :data:`WORDS`, with pauses between
  sentences and a random lead-in, so there are silent stretches) with a random voice (accent + variant),
  speed (130–200 wpm) and pitch (30–70); resampled to 16 kHz, padded/trimmed to exactly ``seconds``.
- **mouth**: per 25 fps frame ``[openness, width, roundness]``, a fixed function of the audio around the
  frame (:mod:`diff2lip.data.synth_mouth`), saved as the ground truth ``mouth.npy``.
- **face**: a random look and slow head motion drawn from the clip's seed only
  (:mod:`diff2lip.data.synth_render`); the mouth is drawn from the per-frame parameters.

Each clip is written in the prepared-data layout (:mod:`diff2lip.data.layout`), so training reads it
unchanged, plus its face track and the raw media for the ``generate`` path::

    OUT_DIR/synth.json                 the corpus settings (a resumed run must use the same ones)
    OUT_DIR/manifest.jsonl, filelists/{train,val,test}.txt
    OUT_DIR/clips/<id>/faces.npy       (N, S, S, 3) uint8 crops of the track's boxes (crop_faces)
    OUT_DIR/clips/<id>/audio.wav       16 kHz mono PCM-16
    OUT_DIR/clips/<id>/mel.npy         (80, 80·seconds + 1) float32 (diff2lip.audio.melspectrogram)
    OUT_DIR/clips/<id>/mouth.npy       (N, 3) float32 ground truth [openness, width, roundness] in [0, 1]
    OUT_DIR/clips/<id>/track.json      the exact per-frame face boxes (FaceTrack), integer pixels
    OUT_DIR/clips/<id>/meta.json       ClipRecord + boxes; written last (marks the clip done)
    OUT_DIR/raw/<id>.mp4, <id>.wav     H.264 25 fps video of the full frames with the speech; the speech

``generate --face-track clips/<id>/track.json raw/<id>.mp4 raw/<id>.wav`` crops the same boxes.

**Held-out clips use unseen voices.** The split (``layout.split_ids`` over the clip ids with the corpus
seed) is decided *before* a clip is made: train clips speak with :data:`TRAIN_ACCENTS` ×
:data:`TRAIN_VARIANTS`, val/test clips with :data:`HELDOUT_ACCENTS` × :data:`HELDOUT_VARIANTS` (disjoint
sets), and every clip has its own seed and face, so learning checks on val/test use voices and faces
never seen in training.

**Determinism.** Clip ``i`` of a corpus with seed ``K`` uses ``np.random.SeedSequence([K, i])`` and
nothing else: the same settings give byte-identical ``faces.npy``, ``mouth.npy``, ``mel.npy``,
``audio.wav`` and ``track.json`` whatever the worker count or the order clips are made in (the mp4 bytes
may differ through encoder metadata).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diff2lip.data import layout
from diff2lip.data.synth_mouth import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, mouth_params
from diff2lip.data.synth_render import FaceRenderer, draw_identity, draw_motion, mouth_openness
from diff2lip.errors import Diff2LipError

__all__ = [
    "HELDOUT_ACCENTS",
    "HELDOUT_VARIANTS",
    "TRAIN_ACCENTS",
    "TRAIN_VARIANTS",
    "WORDS",
    "SynthReport",
    "SynthSettings",
    "clip_ids",
    "make_clip",
    "mouth_openness",
    "speak",
    "synthesize",
]

SETTINGS_FILE = "synth.json"
RAW = "raw"
MOUTH = "mouth.npy"
TRACK = "track.json"

TRAIN_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "f1", "f2", "f3", "f5", "klatt")
HELDOUT_ACCENTS = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
HELDOUT_VARIANTS = ("m5", "m7", "f4", "klatt3")

_WORD_TEXT = """
    the be to of and a in that have it for not on with he as you do at this but his by from they we say her
    she or an will my one all would there their what so up out if about who get which go me when make can
    like time no just him know take people into year your good some could them see other than then now look
    only come its over think also back after use two how our work first well way even new want because any
    these give day most us is was are were been has had did said made went took came saw knew thought told
    asked found gave left felt man woman child world life hand part place case week company system program
    question government number night point home water room mother area money story fact month lot right
    study book eye job word business issue side kind head house service friend father power hour game line
    end member law car city community name president team minute idea kid body information school face
    others level office door health person art war history party result change morning reason research girl
    guy moment air teacher force education foot boy age policy process music market sense nation plan
    college interest death experience effect class control care field development role effort rate heart
    drug show leader light voice wife police mind price report decision son view relationship town road arm
    difference value building action model season society tax director position player record paper space
    ground form event official matter center couple site project activity star table need court oil
    situation cost industry figure street image phone data picture practice piece land product doctor wall
    patient worker news test movie north love support technology step baby computer type attention film tree
    source organization hair window evidence population bag garden dog cat bird fish apple bread milk coffee
    river ocean mountain summer winter spring autumn rain snow wind sun moon sky cloud fire stone flower
    forest beach island bridge train ship long great little own old big high different small large next
    early young important few public bad same able last late hard major better best free sure real whole
    clear easy strong possible special open full short warm cold happy quick slow bright dark soft loud
    quiet simple deep heavy fine fresh green blue red yellow white black brown round sweet clean run walk
    talk speak read write sing play move live believe hold bring happen begin keep start seem help hear turn
    call try leave put mean let stand lose pay meet include continue set learn lead understand watch follow
    stop create spend grow offer remember consider appear buy wait serve die send expect build stay fall cut
    reach kill remain suggest raise pass sell require decide return explain hope develop carry break receive
    agree close laugh smile jump swim cook eat drink sleep dream dance travel visit paint draw very often
    always never sometimes again still already soon here together today tomorrow yesterday really almost
    maybe perhaps quite rather outside inside above below around through across along behind beside between
"""
WORDS = tuple(_WORD_TEXT.split())
"""A few hundred common English words: the vocabulary of the synthetic sentences."""


@dataclass(frozen=True)
class SynthSettings:
    """Everything that defines a corpus (saved as ``synth.json``; a resumed run must match it).

    Attributes:
        clips: number of clips.
        seconds: length of every clip (frames = ``round(25 · seconds)``).
        seed: corpus seed; clip ``i`` uses ``SeedSequence([seed, i])``.
        size: side of the square raw video frames in pixels.
        crop_size: side of the face crops in ``faces.npy`` (128 for the paper's model).
        val_fraction, test_fraction: held-out shares of the clips (unseen voices, see the module doc).
    """

    clips: int
    seconds: float
    seed: int
    size: int = 256
    crop_size: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    @property
    def num_frames(self) -> int:
        return round(self.seconds * FPS)

    def validate(self) -> None:
        """Raise :class:`Diff2LipError` for settings that cannot make a corpus."""
        if self.clips < 1:
            raise Diff2LipError(f"--clips must be at least 1, got {self.clips}")
        if not (math.isfinite(self.seconds) and self.num_frames >= 1):
            raise Diff2LipError(f"--seconds must be at least 1/{FPS} s, got {self.seconds}")
        if self.size < 64:
            raise Diff2LipError(f"--size must be at least 64 pixels, got {self.size}")
        if self.crop_size < 16:
            raise Diff2LipError(f"--crop-size must be at least 16 pixels, got {self.crop_size}")
        for name, v in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 <= v < 1.0:
                raise Diff2LipError(f"{name} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise Diff2LipError("--val-fraction plus --test-fraction must be below 1")


@dataclass
class SynthReport:
    """What a :func:`synthesize` run did."""

    made: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip id, one-line reason)
    splits: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    frames: int = 0  # frames rendered by this run

    def summary(self, out_dir: str | Path) -> str:
        sizes = "/".join(str(len(self.splits.get(s, []))) for s in layout.SPLITS)
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.made)} made, {len(self.skipped)} skipped, {len(self.failed)} failed → {out_dir} "
            f"in {self.seconds:.1f} s ({rate:.1f} frames/s); train/val/test = {sizes}"
        )


def clip_ids(n: int) -> list[str]:
    """The ids of an ``n``-clip corpus: ``synth00000``, ``synth00001``, …"""
    return [f"synth{i:05d}" for i in range(n)]


# ------------------------------------------------------------------------------------------- speech


def _sentence(rng: np.random.Generator) -> str:
    words = [WORDS[i] for i in rng.integers(len(WORDS), size=int(rng.integers(5, 13)))]
    return " ".join(words).capitalize() + "."


def speak(
    sentences: list[str],
    pauses_ms: list[int],
    voice: str,
    speed: int,
    pitch: int,
    workdir: str | Path,
) -> np.ndarray:
    """Speak ``sentences`` with ``espeak-ng`` (a pause of ``pauses_ms[i]`` after sentence ``i``).

    Returns float32 mono audio at 16 kHz (``diff2lip.audio.load_audio`` resamples espeak-ng's 22.05 kHz).
    """
    from diff2lip.audio import load_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise Diff2LipError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    parts = [f'{s} <break time="{p}ms"/>' for s, p in zip(sentences, pauses_ms)]
    ssml = "<speak>" + " ".join(parts) + "</speak>"
    out = Path(workdir) / "speech.wav"
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-m", "-w", str(out), ssml]
    subprocess.run(cmd, check=True, capture_output=True)
    return load_audio(out, SAMPLE_RATE)


def _speech(
    rng: np.random.Generator, num_samples: int, held_out: bool, workdir: Path
) -> tuple[np.ndarray, dict]:
    """Random speech of exactly ``num_samples`` (PCM-16-exact float32) and what was said, by whom."""
    accents, variants = (HELDOUT_ACCENTS, HELDOUT_VARIANTS) if held_out else (TRAIN_ACCENTS, TRAIN_VARIANTS)
    voice = f"{accents[rng.integers(len(accents))]}+{variants[rng.integers(len(variants))]}"
    speed, pitch = int(rng.integers(130, 201)), int(rng.integers(30, 71))
    lead = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE)
    seconds = num_samples / SAMPLE_RATE
    sentences: list[str] = []
    pauses: list[int] = []
    estimate = lead / SAMPLE_RATE
    while estimate < seconds + 0.3:  # enough speech to fill the clip (the tail is trimmed)
        sentences.append(_sentence(rng))
        pauses.append(int(rng.integers(250, 900)))
        estimate += len(sentences[-1].split()) * 60.0 / speed + pauses[-1] / 1000.0
    wav = speak(sentences, pauses, voice, speed, pitch, workdir)
    wav = np.concatenate([np.zeros(lead, np.float32), wav])[:num_samples]
    wav = np.pad(wav, (0, num_samples - len(wav)))
    pcm = np.clip(np.rint(wav * 32767.0), -32768, 32767).astype(np.int16)
    info = {
        "voice": voice,
        "speed": speed,
        "pitch": pitch,
        "text": " ".join(sentences),
        "lead_s": lead / SAMPLE_RATE,
    }
    return pcm.astype(np.float32) / 32768.0, info


def _write_wav(path: Path, wav: np.ndarray) -> None:
    """16 kHz mono PCM-16 wav (``wav`` is PCM-16-exact float, so this round-trips bit-exactly)."""
    pcm = np.clip(np.rint(wav * 32768.0), -32768, 32767).astype("<i2")
    tmp = path.with_name(f".{path.name}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- clips


def make_clip(out_dir: str | Path, settings: SynthSettings, index: int, split: str) -> layout.ClipRecord:
    """Make clip ``index`` of the corpus in ``out_dir`` (all files; ``meta.json`` last).

    ``split`` (``train``/``val``/``test``) picks the voice pool: held-out clips use unseen voices.
    """
    from diff2lip.audio import melspectrogram
    from diff2lip.video.io import VideoWriter
    from diff2lip.video.track import FaceTrack

    out_dir = Path(out_dir)
    clip_id = clip_ids(index + 1)[index]
    n = settings.num_frames
    speech_ss, look_ss, motion_ss, noise_ss = np.random.SeedSequence([settings.seed, index]).spawn(4)
    with tempfile.TemporaryDirectory(prefix="diff2lip-synth-") as tmp:
        wav, info = _speech(
            np.random.default_rng(speech_ss), n * SAMPLES_PER_FRAME, split != "train", Path(tmp)
        )
    mouth = mouth_params(wav, n)  # (N, 3)
    renderer = FaceRenderer(draw_identity(np.random.default_rng(look_ss), settings.size))
    motion = draw_motion(np.random.default_rng(motion_ss), n, FPS)
    frames, boxes = renderer.render(mouth, motion, np.random.default_rng(noise_ss))
    track = FaceTrack(
        np.floor(boxes + 0.5),
        (settings.size, settings.size),
        {"source": "synth", "pads": [0, 0, 0, 0], "smooth": "none"},
    )
    int_boxes = track.int_boxes()  # (N, 4) what generate --face-track crops
    track = FaceTrack(int_boxes.astype(np.float64), track.frame_size, track.metadata)
    faces = _crop_one_thread(frames, int_boxes, settings.crop_size)  # (N, S, S, 3)
    mel = melspectrogram(wav).astype(np.float32)  # (80, T)

    d = layout.clip_dir(out_dir, clip_id)
    d.mkdir(parents=True, exist_ok=True)
    raw = out_dir / RAW
    raw.mkdir(exist_ok=True)
    _save_npy(d / layout.FACES, faces)
    _save_npy(d / layout.MEL, mel)
    _save_npy(d / MOUTH, mouth)
    _write_wav(d / layout.AUDIO, wav)
    track.save(d / TRACK)
    _write_wav(raw / f"{clip_id}.wav", wav)
    with VideoWriter(
        raw / f"{clip_id}.mp4",
        width=settings.size,
        height=settings.size,
        fps=FPS,
        crf=18,
        preset="veryfast",
        audio=(wav, SAMPLE_RATE),
    ) as writer:
        writer.write(frames)
    record = layout.ClipRecord(
        id=clip_id,
        num_frames=n,
        fps=float(FPS),
        size=settings.crop_size,
        source=f"{RAW}/{clip_id}.mp4",
        speaker=info["voice"],
        duration=n / FPS,
        extra={"seed": settings.seed, "index": index, "split": split, "frame_size": settings.size, **info},
    )
    layout.write_meta(out_dir, record, boxes=int_boxes.tolist())
    return record


def _crop_one_thread(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``crop_faces`` with torch limited to one thread (many small resizes: threads only add overhead,
    and clips are already made in parallel); the caller's thread count is restored."""
    import torch

    from diff2lip.video.crop import crop_faces

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return crop_faces(frames, boxes, size)
    finally:
        torch.set_num_threads(threads)


def _worker_init() -> None:
    """One thread per worker process: the workers already use every core."""
    import torch

    torch.set_num_threads(1)


def _make_clip_task(out_dir: str, settings: dict[str, Any], index: int, split: str) -> tuple[int, str | None]:
    """Process-pool entry point: ``(index, None)`` or ``(index, one-line error)``; never raises."""
    try:
        make_clip(out_dir, SynthSettings(**settings), index, split)
    except (Diff2LipError, OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as e:
        return index, " ".join(f"{type(e).__name__}: {e}".split())
    return index, None


def _check_settings(out_dir: Path, settings: SynthSettings) -> None:
    """Write ``synth.json`` for a new corpus, or check that a resumed one was made with the same settings."""
    p = out_dir / SETTINGS_FILE
    want = asdict(settings)
    if p.is_file():
        try:
            have = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise Diff2LipError(f"unreadable corpus settings ({e})", p) from None
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            was = ", ".join(f"{k}={have.get(k)}" for k in diff)
            raise Diff2LipError(f"corpus was made with different settings ({was}); use a new OUT_DIR", p)
        return
    if (out_dir / layout.CLIPS).is_dir() and any((out_dir / layout.CLIPS).iterdir()):
        raise Diff2LipError("has clips but no synth.json: not a synthetic corpus; use a new OUT_DIR", out_dir)
    tmp = p.with_name(f".{SETTINGS_FILE}.tmp")
    tmp.write_text(json.dumps(want, indent=1) + "\n")
    os.replace(tmp, p)


def synthesize(
    out_dir: str | Path,
    settings: SynthSettings,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> SynthReport:
    """Make (or finish) a synthetic corpus in ``out_dir``; resumable and parallel.

    Clips whose ``meta.json`` exists are skipped. Clip failures are collected in the report, not raised;
    the manifest and filelists list the finished clips.

    Args:
        out_dir: the corpus directory (created; must not be a file).
        settings: the corpus (validated; must match ``synth.json`` when resuming).
        workers: processes (spawned; 1 = in this process).
        progress: called with the number of clips finished (made, skipped or failed) since the last call.

    Raises:
        Diff2LipError: bad settings, ``out_dir`` is a file, or it holds a different corpus.
    """
    settings.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise Diff2LipError("output path exists and is not a directory", out_dir)
    if workers < 1:
        raise Diff2LipError(f"--workers must be at least 1, got {workers}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, settings)
    start = time.perf_counter()
    ids = clip_ids(settings.clips)
    splits = layout.split_ids(ids, settings.val_fraction, settings.test_fraction, settings.seed)
    split_of = {i: name for name, members in splits.items() for i in members}
    report = SynthReport()
    todo = []
    for index, clip_id in enumerate(ids):
        if layout.is_done(out_dir, clip_id):
            report.skipped.append(clip_id)
        else:
            todo.append(index)
    if progress and report.skipped:
        progress(len(report.skipped))

    def done(index: int, error: str | None) -> None:
        if error is None:
            report.made.append(ids[index])
        else:
            report.failed.append((ids[index], error))
        if progress:
            progress(1)

    if workers == 1 or len(todo) <= 1:
        for index in todo:
            done(*_make_clip_task(str(out_dir), asdict(settings), index, split_of[ids[index]]))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_worker_init) as pool:
            futures = [
                pool.submit(_make_clip_task, str(out_dir), asdict(settings), i, split_of[ids[i]])
                for i in todo
            ]
            for fut in as_completed(futures):
                done(*fut.result())

    finished = {r.id for r in layout.rebuild_manifest(out_dir)}
    report.splits = {name: [i for i in members if i in finished] for name, members in splits.items()}
    layout.write_filelists(out_dir, report.splits)
    report.made.sort()
    report.failed.sort()
    report.frames = len(report.made) * settings.num_frames
    report.seconds = time.perf_counter() - start
    return report
