"""Workers of ``diff2lip serve``: each loads the model once and runs queued jobs with ``generate_video``.

Job options come from form fields (the HTTP API and the browser page take the same ones):
:func:`job_options` checks them into a JSON-able dict stored with the job, :func:`generate_options` turns
that into :class:`~diff2lip.inference.runner.GenerateOptions`. A running job is stopped at its next
progress report when it is cancelled (``generate_video`` then removes its partial output).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from diff2lip.errors import Diff2LipError
from diff2lip.serve.jobs import Job, JobStore

__all__ = ["JOB_FIELDS", "Worker", "generate_options", "job_options"]

log = logging.getLogger("diff2lip.serve")

JOB_FIELDS: dict[str, str] = {
    "sampler": "ddim, ddpm or dpmpp (default: the model's own)",
    "steps": "sampler steps (default: the model's own)",
    "reference": "self (default), first or frame:N",
    "blend": "feather (default) or hard",
    "face_select": "largest (default), central, score or track",
    "face_id": "lip-sync only person K of `diff2lip faces` (default: the automatic choice)",
    "length": "audio (default), video or shortest",
    "seed": "seed of the shared noise (default 7)",
    "crf": "x264 quality or auto (default auto)",
}
"""The options a job takes (form fields of ``POST /api/v1/jobs``), with their help."""

STAGE_WEIGHTS = {"detect": 0.3, "generate": 0.7}
STAGE_NAMES = {"detect": "tracking faces", "generate": "generating"}


class JobCancelled(Exception):
    """Raised from the progress callback when the job was cancelled."""


def job_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check form fields (strings; empty = default) into a job's stored options; one-line errors."""
    out: dict[str, Any] = {}
    unknown = sorted(k for k in fields if k not in JOB_FIELDS)
    if unknown:
        raise Diff2LipError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(JOB_FIELDS)})")

    def choice(name: str, allowed: tuple[str, ...], value: str) -> str:
        if value not in allowed:
            raise Diff2LipError(f"{name} must be one of {', '.join(allowed)}, got '{value}'")
        return value

    def integer(name: str, value: str, low: int) -> int:
        try:
            number = int(value)
        except ValueError:
            raise Diff2LipError(f"{name} must be an integer, got '{value}'") from None
        if number < low:
            raise Diff2LipError(f"{name} must be >= {low}, got {number}")
        return number

    for name, raw in fields.items():
        value = str(raw).strip()
        if value == "":
            continue
        if name == "sampler":
            out[name] = choice(name, ("ddim", "ddpm", "dpmpp"), value)
        elif name == "blend":
            out[name] = choice(name, ("feather", "hard"), value)
        elif name == "face_select":
            out[name] = choice(name, ("largest", "central", "score", "track"), value)
        elif name == "length":
            out[name] = choice(name, ("audio", "video", "shortest"), value)
        elif name == "steps":
            out[name] = integer(name, value, 1)
        elif name in ("face_id", "seed"):
            out[name] = integer(name, value, 0)
        elif name == "reference":
            if value not in ("self", "first") and not (value.startswith("frame:") and value[6:].isdigit()):
                raise Diff2LipError(f"reference must be self, first or frame:N, got '{value}'")
            out[name] = value
        elif name == "crf" and value != "auto":  # (auto: the default)
            try:
                crf = float(value)
            except ValueError:
                raise Diff2LipError(f"crf must be a number or auto, got '{value}'") from None
            if not 0 <= crf <= 51:
                raise Diff2LipError(f"crf must be between 0 and 51, got {crf:g}")
            out[name] = crf
    return out


def generate_options(options: Mapping[str, Any]):  # -> GenerateOptions
    """A job's stored options → ``GenerateOptions`` (the CLI's defaults otherwise)."""
    from diff2lip.inference.runner import GenerateOptions

    fields = dict(options)
    if "face_select" in fields:
        fields["choose"] = fields.pop("face_select")
    return GenerateOptions(**fields)


class Worker(threading.Thread):
    """Runs jobs until :attr:`stop` is set. ``load_pipeline()`` is called once, in the thread."""

    def __init__(
        self,
        store: JobStore,
        load_pipeline: Callable[[], Any],
        *,
        index: int = 0,
        keep_s: float = 24 * 3600.0,
    ):
        super().__init__(name=f"diff2lip-worker-{index}", daemon=True)
        self.store = store
        self.load_pipeline = load_pipeline
        self.keep_s = keep_s
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.load_error: str | None = None

    def run(self) -> None:
        try:
            pipeline = self.load_pipeline()
        except Exception as e:  # the server reports it on /healthz; jobs stay queued
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("worker could not load the model: %s", self.load_error)
            self.ready.set()
            return
        self.ready.set()
        last_purge = 0.0
        while not self.stop.is_set():
            job = self.store.claim()
            if job is None:
                if time.monotonic() - last_purge > 60:
                    self.store.purge(self.keep_s)
                    last_purge = time.monotonic()
                self.store.wait_for_work(1.0)
                continue
            self.run_job(job, pipeline)

    def run_job(self, job: Job, pipeline: Any) -> None:
        from diff2lip.inference.runner import generate_video

        folder = self.store.folder(job.id)
        done: dict[str, int] = {}
        t0 = time.monotonic()

        def progress(stage: str, n: int, total: int | None) -> None:
            done[stage] = done.get(stage, 0) + n
            fraction = 0.0
            for name, weight in STAGE_WEIGHTS.items():
                if name == stage and total:
                    fraction += weight * min(1.0, done[name] / total)
                elif name in done and name != stage:
                    fraction += weight
            elapsed = time.monotonic() - t0
            eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
            count = min(done[stage], total) if total else done[stage]
            text = f"{STAGE_NAMES.get(stage, stage)} {count}/{total} frames" if total else stage
            if self.store.report(job.id, text, fraction, eta) != "running":
                raise JobCancelled

        last_preview = [0.0]

        def step(step: int, num_steps: int, x_t: Any, pred_x0: Any) -> None:
            """The live diffusion preview: the current frame's x̂0, at most twice a second."""
            if time.monotonic() - last_preview[0] < 0.5 and step < num_steps - 1:
                return
            last_preview[0] = time.monotonic()
            write_preview(self.store.preview_path(job.id), pred_x0[0], step, num_steps)

        try:
            opts = generate_options(job.options)
            report = generate_video(
                folder / job.inputs["video"],
                folder / job.inputs["audio"],
                self.store.result_path(job.id),
                pipeline,
                opts,
                progress=progress,
                step_callback=step,
            )
        except JobCancelled:
            self.store.finish(job.id, "cancelled")
        except Diff2LipError as e:
            self.store.finish(job.id, "failed", error=_public(str(e), folder))
        except Exception as e:  # a bug or an odd file: the job fails, the server goes on
            log.exception("job %s failed", job.id)
            self.store.finish(job.id, "failed", error=_public(f"{type(e).__name__}: {e}", folder))
        else:
            if report.frames_without_face == report.frames:  # the CLI warns; a job fails
                self.store.result_path(job.id).unlink(missing_ok=True)
                self.store.finish(job.id, "failed", error="no face was found in any frame")
                return
            self.store.finish(job.id, "done", summary=_public(report.summary(), folder))


def write_preview(path: Any, pred_x0: Any, step: int, num_steps: int) -> None:
    """Save one crop's x̂0 (``(3, S, S)`` in [-1, 1]) as a PNG, atomically; its name says the step."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from diff2lip.fileio import write_atomic

    image = ((pred_x0.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()  # (3, S, S)
    array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # (S, S, 3)
    info = PngInfo()
    info.add_text("step", f"{step + 1}/{num_steps}")
    write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))


def _public(text: str, folder: Any) -> str:
    """One line, with the server's job folder left out of file names."""
    line = text.splitlines()[0] if text else ""
    return line.replace(f"{folder}/", "")
