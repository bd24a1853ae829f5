"""The bundled demo (``diff2lip demo``, issue 5): lip-sync a brand-new synthetic face to new speech, offline.

What it does, end to end, with nothing downloaded:

1. speaks ``text`` with ``espeak-ng`` (or takes the user's ``audio`` file);
2. renders a *new* synthetic face (:mod:`diff2lip.data.synth_render`: a random identity and slow head
   motion from ``seed``) for as long as the speech lasts, with a neutral **closed** mouth in every frame —
   so every mouth movement in the result comes from the model listening to the speech;
3. writes that input video and its exact face track (the renderer knows the face boxes, so no detector is
   needed) to a temporary work directory;
4. runs the normal ``generate`` path (:func:`~diff2lip.inference.runner.generate_video`) with the bundled
   model — by default the package's ``assets/demo_model`` (``config.json`` + ``model.safetensors``), a
   model trained with ``diff2lip train synthetic`` on the synthetic corpus (benchmarks/RESULTS.md) — and
   writes ``OUT.mp4`` plus ``OUT_side_by_side.mp4`` (input | output, with the speech).

The crop size comes from the checkpoint's config. The bundled model has only ever seen synthetic faces;
real faces need the official checkpoint (``diff2lip convert``) or a model trained with ``diff2lip train``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diff2lip.errors import Diff2LipError

__all__ = [
    "DEFAULT_TEXT",
    "DemoResult",
    "bundled_model_dir",
    "frame_size_for",
    "render_input_face",
    "run_demo",
    "side_by_side_path",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""The package's bundled files (see ``assets/README.md``)."""
DEMO_MODEL = "demo_model"
DEMO_TEACHER = "demo_teacher"
DEFAULT_TEXT = "Hello! This face was drawn by a computer, and its lips follow my words."
"""What the demo says when no ``--text`` or ``--audio`` is given."""
VOICE = "en-us"
FPS = 25
SAMPLE_RATE = 16000

Progress = Callable[[str, int, int | None], None]


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote."""

    output: Path  # the lip-synced video
    side_by_side: Path  # input | output, with the speech
    frames: int
    seconds: float  # speech duration = video duration
    frame_size: int  # side of the square rendered frames
    crop_size: int  # the model's face-crop size
    checkpoint: Path
    text: str | None  # what espeak-ng said (None with --audio)
    audio: Path | None  # the user's audio file (None with text)

    def summary(self) -> str:
        said = f'"{self.text}"' if self.text is not None else str(self.audio)
        return (
            f"lip-synced a synthetic face to {said} ({self.seconds:.2f} s, {self.frames} frames, "
            f"{self.crop_size} px model {self.checkpoint})\n"
            f"  result:       {self.output}\n"
            f"  side by side: {self.side_by_side}"
        )


def bundled_model_dir() -> Path:
    """Where the bundled demo model lives: ``<package>/assets/demo_model``."""
    return ASSETS_DIR / DEMO_MODEL


def bundled_teacher_dir() -> Path:
    """The model the bundled demo model was distilled from (``diff2lip distill demo-teacher``)."""
    return ASSETS_DIR / DEMO_TEACHER


def _checkpoint(checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise Diff2LipError("checkpoint not found", p)
        return p
    p = bundled_model_dir()
    if not ((p / "config.json").is_file() and (p / "model.safetensors").is_file()):
        raise Diff2LipError("the bundled demo model is not installed in this build; pass --checkpoint", p)
    return p


def side_by_side_path(output: str | Path) -> Path:
    """``OUT.mp4`` → ``OUT_side_by_side.mp4`` (same directory and suffix)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_side_by_side{p.suffix}")


def _speak(text: str, out: Path) -> Path:
    """Speak ``text`` with espeak-ng into ``out`` (a wav; the text goes through a file, never argv)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise Diff2LipError(
            "espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng); or pass --audio"
        )
    text_file = out.with_suffix(".txt")
    text_file.write_text(text, encoding="utf-8")
    subprocess.run([exe, "-v", VOICE, "-s", "150", "-w", str(out), "-f", str(text_file)], check=True)
    return out


def frame_size_for(crop_size: int) -> int:
    """Side of the rendered frames: the face box is about 0.6 of the frame, so twice the crop (≥ 128)
    keeps the model's crop at about the face's own resolution."""
    return max(128, 2 * int(crop_size))


def render_input_face(num_frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A new synthetic face with a closed, neutral mouth: ``(N, size, size, 3)`` uint8 frames and
    ``(N, 4)`` integer face boxes (exact, from the renderer; half-open ``x1, y1, x2, y2``).

    The look, head motion and pixel noise come from ``SeedSequence(seed)`` only.
    """
    from diff2lip.data.synth_mouth import REST_WIDTH
    from diff2lip.data.synth_render import FaceRenderer, draw_identity, draw_motion

    look, motion_ss, noise = np.random.SeedSequence(seed).spawn(3)
    renderer = FaceRenderer(draw_identity(np.random.default_rng(look), size))
    motion = draw_motion(np.random.default_rng(motion_ss), num_frames, FPS)
    closed = np.tile(np.array([[0.0, REST_WIDTH, 0.0]], np.float32), (num_frames, 1))  # (N, 3)
    frames, boxes = renderer.render(closed, motion, np.random.default_rng(noise))
    return frames, np.floor(boxes + 0.5).astype(np.int64)


def _label(frames: np.ndarray, text: str) -> np.ndarray:
    """Write a small caption in the top-left corner of every frame (PIL's built-in font)."""
    from PIL import Image, ImageDraw

    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        img = Image.fromarray(f)
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, 6 * len(text) + 5, 13), fill=(0, 0, 0))
        draw.text((3, 1), text, fill=(255, 255, 255))
        out[i] = np.asarray(img)
    return out


def _write_side_by_side(
    path: Path, left: np.ndarray, result: Path, speech: Path, seconds: float, crf: float
) -> None:
    """Stream ``result``'s frames next to the in-memory ``left`` frames into ``path`` with the speech."""
    from diff2lip.video.io import VideoReader, VideoWriter

    h, w = left.shape[1:3]
    with VideoWriter(
        path, width=2 * w, height=h, fps=FPS, crf=crf, preset="veryfast", audio=speech, audio_duration=seconds
    ) as writer:
        for chunk in VideoReader(result):
            idx = np.minimum(chunk.start_index + np.arange(len(chunk)), len(left) - 1)
            both = np.concatenate([_label(left[idx], "input"), _label(chunk.frames, "Diff2Lip")], axis=2)
            writer.write(both, chunk.times)  # (n, H, 2W, 3)


def run_demo(
    out: str | Path,
    *,
    text: str | None = None,
    audio: str | Path | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> DemoResult:
    """Render a new synthetic face, lip-sync it to ``text`` (espeak-ng) or ``audio``, write two videos.

    Args:
        out: the lip-synced ``.mp4``; the comparison goes to ``OUT_side_by_side.mp4`` beside it.
        text: what to say (default :data:`DEFAULT_TEXT`); not together with ``audio``.
        audio: a speech file to use instead of text-to-speech (any format PyAV reads).
        checkpoint: a model directory / official ``.pt``; default the bundled ``assets/demo_model``.
        seed: picks the face, its head motion and the shared sampling noise.
        steps: sampler steps (default: the checkpoint's).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        progress: ``progress(stage, done, total)`` as generation advances (see ``generate_video``).

    Raises:
        Diff2LipError: bad arguments, a missing model/audio file, or no espeak-ng.
    """
    from diff2lip.audio import load_audio
    from diff2lip.fileio import publish, remove_stale_temps, temp_sibling
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions, generate_video
    from diff2lip.video.io import VideoWriter
    from diff2lip.video.track import FaceTrack

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise Diff2LipError("output must be a .mp4 file name", out)
    if not out.parent.is_dir():
        raise Diff2LipError("output directory does not exist", out.parent)
    if text is not None and audio is not None:
        raise Diff2LipError("give --text or --audio, not both")
    if text is not None and not text.strip():
        raise Diff2LipError("--text is empty")
    if steps is not None and steps < 1:
        raise Diff2LipError(f"--steps must be >= 1, got {steps}")
    if audio is not None and not Path(audio).is_file():
        raise Diff2LipError("audio file not found", audio)
    ckpt = _checkpoint(checkpoint)
    pipeline = Diff2LipPipeline.from_pretrained(ckpt, device=device)
    crop = pipeline.image_size
    size = frame_size_for(crop)
    sbs = side_by_side_path(out)

    with tempfile.TemporaryDirectory(prefix="diff2lip-demo-") as tmp:
        work = Path(tmp)
        said = None
        if audio is None:
            said = DEFAULT_TEXT if text is None else " ".join(text.split())
            speech = _speak(said, work / "speech.wav")
        else:
            speech = Path(audio)
        wav = load_audio(speech, SAMPLE_RATE)
        seconds = len(wav) / SAMPLE_RATE
        if seconds <= 0:
            raise Diff2LipError("audio is empty", speech)
        n = max(1, math.ceil(seconds * FPS - 1e-9))  # frames at t = k/25 < seconds

        frames, boxes = render_input_face(n, size, seed)
        video = work / "input.mp4"
        with VideoWriter(video, width=size, height=size, fps=FPS, crf=12, preset="veryfast") as writer:
            writer.write(frames)
        track = FaceTrack(boxes.astype(np.float64), (size, size), {"source": "synth", "smooth": "none"})
        track.save(work / "track.json")

        opts = GenerateOptions(
            face_track=str(work / "track.json"), smooth="none", steps=steps, seed=seed, length="audio"
        )
        for target in (out, sbs):
            remove_stale_temps(target.parent, target.name, "demo")  # left by a killed demo
        out_tmp, sbs_tmp = temp_sibling(out, "demo"), temp_sibling(sbs, "demo")
        try:
            generate_video(video, speech, out_tmp, pipeline, opts, progress=progress)
            _write_side_by_side(sbs_tmp, frames, out_tmp, speech, seconds, crf=18.0)  # a preview
            publish(out_tmp, out)
            publish(sbs_tmp, sbs)
        finally:
            out_tmp.unlink(missing_ok=True)
            sbs_tmp.unlink(missing_ok=True)
    return DemoResult(
        output=out,
        side_by_side=sbs,
        frames=n,
        seconds=seconds,
        frame_size=size,
        crop_size=crop,
        checkpoint=ckpt,
        text=said,
        audio=None if audio is None else Path(audio),
    )
