"""The browser page of ``diff2lip serve`` (Gradio), mounted at ``/`` of the API's app.

Inputs on the left (a video or image, speech as a file, a recording or text spoken by espeak-ng, the job
options of :data:`~diff2lip.serve.worker.JOB_FIELDS`), outputs on the right (a progress line, the live
diffusion preview, the result, a side-by-side comparison and the run report). Jobs go to the same queue
as the HTTP API. The page keeps its job's id in the browser (``gr.BrowserState``), so a reload finds a
running job again; nothing about a user is held in the server process outside Gradio's session state.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diff2lip.errors import Diff2LipError
from diff2lip.serve.jobs import FINAL_STATES, Job, JobStore
from diff2lip.serve.worker import JOB_FIELDS

if TYPE_CHECKING:
    import numpy as np

    from diff2lip.serve.app import ServeSettings

__all__ = ["build_ui", "format_seconds", "mount_ui", "progress_line", "side_by_side"]

SIDE_BY_SIDE = "side_by_side.mp4"
POLL_S = 1.0

CHOICES: dict[str, tuple[str, ...]] = {
    "sampler": ("ddim", "ddpm", "dpmpp"),
    "blend": ("feather", "hard"),
    "face_select": ("largest", "central", "score", "track"),
    "length": ("audio", "video", "shortest"),
}
"""Options picked from a list (the others are typed; empty = the default)."""

PLACEHOLDERS = {
    "steps": "model's own",
    "reference": "self",
    "face_id": "automatic",
    "seed": "7",
    "crf": "auto",
}

DEMO_NOTE = (
    "**This server runs the bundled demo model.** It was trained on synthetic faces only, so real faces "
    "come out blurry or wrong. For real faces start it with `--checkpoint paper` (the converted official "
    "model) or a model you trained: `diff2lip serve --checkpoint paper`."
)


def format_seconds(seconds: float) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 03 min``."""
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_line(job: Job) -> str:
    """One line for the page, e.g. ``running — generating 32/68 frames — 63 % — ETA 7 s``."""
    if job.state == "queued":
        return f"queued — {job.stage}" if job.stage else "queued — waiting for a free worker"
    if job.state in ("running", "cancelling"):
        parts = [job.state, job.stage or "starting", f"{100 * job.progress:.0f} %"]
        if job.eta_s is not None:
            parts.append(f"ETA {format_seconds(job.eta_s)}")
        return " — ".join(parts)
    if job.state == "done":
        took = f" — took {format_seconds(job.finished - job.started)}" if job.finished and job.started else ""
        return f"done — 100 %{took}"
    if job.state == "failed":
        return f"failed — {job.error or 'no reason given'}"
    return job.state


def _cycle(reader: Any) -> Iterator[np.ndarray]:
    """The reader's frames, over and over (``generate`` loops a video shorter than the audio)."""
    while True:
        count = 0
        for chunk in reader:
            yield from chunk.frames
            count += len(chunk.frames)
        if count == 0:
            raise Diff2LipError("has no frames", reader.path)


def side_by_side(source: str | Path, result: str | Path, out: str | Path) -> Path:
    """Write ``input | result`` to ``out``: the result's frames, times and audio; the input's frames (by
    index, looped like ``generate`` loops them) scaled to the result's height."""
    import numpy as np
    from PIL import Image

    from diff2lip.video.io import VideoReader, VideoWriter

    res = VideoReader(result)
    duration = res.info.duration or (res.num_frames or 1) / res.fps
    src = VideoReader(source, image_fps=1.0, image_duration=max(1.0, duration))
    h = res.height
    w = max(2, round(src.width * h / src.height / 2) * 2)
    frames = _cycle(src)
    with VideoWriter(out, width=w + res.width, height=h, fps=res.fps, audio=result, preset="veryfast") as wr:
        for chunk in res:
            rows = []
            for frame in chunk.frames:
                left = next(frames)
                if left.shape[:2] != (h, w):
                    left = np.asarray(Image.fromarray(left).resize((w, h), Image.BILINEAR))
                rows.append(np.concatenate([left, frame], axis=1))
            wr.write(np.stack(rows), chunk.times)
    return Path(out)


def _speak(text: str, folder: Path) -> Path:
    """Text → ``folder/speech.wav`` with espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise Diff2LipError("espeak-ng is not installed on the server: upload or record the speech instead")
    out = folder / "speech.wav"
    try:
        subprocess.run([exe, "-w", str(out), text], check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise Diff2LipError(f"espeak-ng could not speak the text ({type(e).__name__})") from None
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def build_ui(settings: ServeSettings, store: Callable[[], JobStore]) -> Any:
    """The ``gr.Blocks`` page; ``store()`` is called inside event handlers only (the queue opens with the
    app's lifespan)."""
    import gradio as gr

    from diff2lip.serve.app import UploadTooLarge, accept_paths

    names = list(JOB_FIELDS)
    # the stored job id survives a server restart (the queue does too): a key derived from the server's
    # own settings, not a secret from this browser, which holds the id anyway
    key = hashlib.sha256(f"diff2lip-ui:{Path(settings.data_dir).resolve()}:{settings.token}".encode())

    def preview_first_frame(video: str | None, face_select: str) -> tuple[Any, str]:
        from diff2lip.serve.preview import first_frame_preview

        if not video:
            return None, "⚠ upload a video or image first"
        try:
            image, note = first_frame_preview(video, face_select or "largest")
        except Exception as e:  # a bad file is the user's to fix: one line, no traceback
            return None, f"⚠ {_one_line(e)}"
        return image, note

    def generate(video: str | None, audio: str | None, text: str, *values: str) -> tuple[Any, ...]:
        def refused(message: str) -> tuple[Any, ...]:
            gr.Warning(message)  # the line below is overwritten while an earlier job is still polled
            return (gr.skip(), gr.skip(), f"⚠ {message}", *(gr.skip(),) * 5)

        if not video:
            return refused("upload a video or image")
        text = (text or "").strip()
        if not audio and not text:
            return refused("give the speech: upload or record audio, or type text to speak")
        fields = {name: "" if v is None else str(v) for name, v in zip(names, values, strict=True)}
        with tempfile.TemporaryDirectory(prefix="diff2lip-tts-") as tmp:
            try:
                speech = audio or _speak(text, Path(tmp))
                job_id = accept_paths(store(), {"video": video, "audio": speech}, fields, settings.max_upload)
            except UploadTooLarge:
                return refused(f"upload larger than {settings.max_upload} bytes")
            except Diff2LipError as e:
                return refused(_one_line(e))
        return (
            job_id,
            gr.Timer(active=True),
            "queued — waiting for a free worker",
            None,
            None,
            None,
            "",
            None,
        )

    def poll(job_id: str | None) -> tuple[Any, ...]:
        """The job's state → progress line, live preview, result, report, finished id, timer."""
        if not job_id:
            return (gr.skip(),) * 5 + (gr.Timer(active=False),)
        st = store()
        job = st.get(job_id) if job_id.isalnum() else None
        if job is None:
            gone = "⚠ that job is gone (finished jobs are removed after a while); start a new one"
            return gone, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
        preview = st.preview_path(job.id)
        live = _live_preview(preview) if preview.is_file() else gr.skip()
        finished = job.state in FINAL_STATES
        done = job.state == "done" and st.result_path(job.id).is_file()
        result = str(st.result_path(job.id)) if done else gr.skip()
        report = (job.summary or job.error or job.state) if finished else gr.skip()
        return (
            progress_line(job),
            live,
            result,
            report,
            job.id if done else gr.skip(),
            gr.Timer(active=not finished),
        )

    def compare(job_id: str | None) -> Any:
        """The side-by-side video of a finished job (made once, in its folder)."""
        if not job_id:
            return None
        st = store()
        job = st.get(job_id)
        if job is None or job.state != "done":
            return None
        out = st.folder(job.id) / SIDE_BY_SIDE
        if not out.is_file():
            try:
                side_by_side(st.folder(job.id) / job.inputs["video"], st.result_path(job.id), out)
            except Exception as e:  # the comparison is a nicety: the result stands without it
                gr.Warning(f"no side-by-side video: {_one_line(e)}")
                return None
        return str(out)

    with gr.Blocks(title="diff2lip", delete_cache=(3600, max(3600, round(settings.keep_hours * 3600)))) as ui:
        job_state = gr.BrowserState(None, storage_key="diff2lip-job", secret=key.hexdigest()[:32])
        done_state = gr.State(None)
        gr.Markdown("## diff2lip — lip-sync a video to speech")
        if settings.checkpoint == "demo":
            gr.Markdown(DEMO_NOTE, elem_id="demo-note")
        with gr.Row():
            with gr.Column():
                video = gr.File(
                    label="Video or image (the face to lip-sync)",
                    file_types=["video", "image"],
                    type="filepath",
                    elem_id="video-input",
                )
                audio = gr.Audio(
                    label="Speech: upload or record",
                    sources=["upload", "microphone"],
                    type="filepath",
                    elem_id="audio-input",
                )
                text = gr.Textbox(
                    label="or type text to speak",
                    placeholder="spoken with espeak-ng when no audio is given",
                    elem_id="tts-text",
                )
                with gr.Accordion("Options (empty = the default)", open=False, elem_id="options"):
                    widgets = []
                    with gr.Row():
                        for name in names:
                            if name in CHOICES:
                                choices = [("default", ""), *((c, c) for c in CHOICES[name])]
                                widget = gr.Dropdown(
                                    choices,
                                    value="",
                                    label=name,
                                    info=JOB_FIELDS[name],
                                    min_width=160,
                                    elem_id=f"opt-{name}",
                                )
                            else:
                                widget = gr.Textbox(
                                    label=name,
                                    placeholder=PLACEHOLDERS.get(name, "default"),
                                    info=JOB_FIELDS[name],
                                    min_width=160,
                                    elem_id=f"opt-{name}",
                                )
                            widgets.append(widget)
                with gr.Row():
                    preview_button = gr.Button("Preview first frame", elem_id="preview-button")
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                first_frame = gr.Image(
                    label="First frame: the green box is lip-synced", interactive=False, elem_id="first-frame"
                )
                first_note = gr.Markdown(elem_id="first-note")
            with gr.Column():
                status = gr.Markdown("no job yet", elem_id="progress")
                live = gr.Image(
                    label="Live diffusion preview (x̂0)", interactive=False, elem_id="live-preview"
                )
                result = gr.Video(label="Result", interactive=False, elem_id="result-video")
                side = gr.Video(label="Side by side: input | result", interactive=False, elem_id="side-video")
                report = gr.Textbox(label="Run report", lines=3, interactive=False, elem_id="report")
        timer = gr.Timer(POLL_S, active=False)

        face_select = widgets[names.index("face_select")]
        preview_button.click(preview_first_frame, [video, face_select], [first_frame, first_note])
        generate_button.click(
            generate,
            [video, audio, text, *widgets],
            [job_state, timer, status, live, result, side, report, done_state],
            show_progress="minimal",
            show_progress_on=generate_button,
            concurrency_limit=None,  # copying uploads; the workers bound the real work
        )
        polled = [status, live, result, report, done_state, timer]
        internal: dict[str, Any] = {"api_visibility": "undocumented", "concurrency_limit": None}
        timer.tick(poll, job_state, polled, show_progress="hidden", **internal)
        ui.load(poll, job_state, polled, show_progress="hidden", **internal)  # a reload re-attaches
        done_state.change(compare, done_state, side, **internal)
    return ui


def _live_preview(path: Path, size: int = 256) -> Any:
    """The running job's x̂0 PNG, scaled up (nearest) to ``size`` px for the page; ``gr.skip()`` when there
    is none yet (or it cannot be read just now)."""
    import gradio as gr
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            picture = im.convert("RGB")
    except (OSError, ValueError):
        return gr.skip()
    scale = max(1, size // max(picture.size))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return np.asarray(picture)


def mount_ui(app: Any, settings: ServeSettings, store: Callable[[], JobStore]) -> None:
    """Mount the page at ``/`` of ``app`` (after the API routes, which keep working);
    ``store()`` returns the running :class:`~diff2lip.serve.jobs.JobStore`."""
    import gradio as gr

    gr.mount_gradio_app(
        app,
        build_ui(settings, store),
        path="/",
        allowed_paths=[str(Path(settings.data_dir).resolve())],
        max_file_size=settings.max_upload,
        run_history=False,
        footer_links=["api", "settings"],
    )
