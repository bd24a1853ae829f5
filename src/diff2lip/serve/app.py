"""The ASGI app of ``diff2lip serve``: the HTTP job API, the browser page, one queue and its workers.

Routes (FastAPI writes the OpenAPI schema at ``/openapi.json``, browsable at ``/docs``):

* ``POST /api/v1/jobs`` — multipart: ``video`` (or ``image``) and ``audio`` files, options as further
  fields (:data:`~diff2lip.serve.worker.JOB_FIELDS`) → ``202 {"id", "state": "queued"}``;
* ``GET /api/v1/jobs`` (newest first), ``GET /api/v1/jobs/{id}``, ``GET /api/v1/jobs/{id}/result`` (the
  mp4, when ``done``), ``DELETE /api/v1/jobs/{id}`` (cancels a queued or running job; removes a finished
  one); ``GET /healthz``;
* ``/`` — the browser page (:mod:`diff2lip.serve.ui`, Gradio), submitting to the same queue.

Bad requests get a JSON ``{"detail": "..."}``: 413 (upload over the limit), 415 (a file that is not a
video/image or has no audio stream — checked by content with PyAV, never by name), 422 (an empty file, a
bad option), 404 (unknown job), 409 (no result yet). With a token every route needs it:
``Authorization: Bearer TOKEN`` (or, for the page, ``?token=TOKEN`` once, kept in a cookie).
"""

from __future__ import annotations

import contextlib
import hmac
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile

from diff2lip.errors import Diff2LipError
from diff2lip.serve.jobs import JobStore
from diff2lip.serve.worker import JOB_FIELDS, Worker, job_options

__all__ = ["ServeSettings", "accept_job", "accept_paths", "check_media", "create_app"]

COOKIE = "diff2lip_token"


@dataclass
class ServeSettings:
    """Everything ``diff2lip serve`` is started with."""

    data_dir: Path
    checkpoint: str = "demo"
    device: str = "auto"
    workers: int | None = None  # None: one per device (each CUDA GPU, else one)
    token: str | None = None
    max_upload: int = 2 * 1024**3  # bytes per request
    keep_hours: float = 24.0  # finished jobs and their files are deleted after this
    ui: bool = True


class UploadTooLarge(Exception):
    pass


def _save_upload(source: BinaryIO, target: Path, budget: list[int]) -> int:
    """Copy an uploaded file to ``target``; ``budget[0]`` bytes may still be written in this request."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UploadTooLarge
            out.write(chunk)
    return written


def check_media(path: Path, role: str) -> None:
    """Raise :class:`Diff2LipError` unless ``path`` is a video/image (``role="video"``) or has an audio
    stream (``role="audio"``), judged by its content."""
    import av

    try:
        with av.open(str(path)) as c:
            if role == "video" and not c.streams.video:
                raise Diff2LipError(f"the {role} upload has no video stream")
            if role == "audio" and not c.streams.audio:
                raise Diff2LipError(f"the {role} upload has no audio stream")
    except av.FFmpegError:
        raise Diff2LipError(f"the {role} upload is not a video, image or audio file PyAV can read") from None


def accept_job(store: JobStore, files: dict[str, BinaryIO], fields: dict[str, Any], max_upload: int) -> str:
    """Store a job's uploads and accept it; returns its id. ``files``: role → readable binary file.

    Raises :class:`UploadTooLarge`, or :class:`Diff2LipError` with an HTTP status in ``.status``.
    """
    options = job_options(fields)
    job_id = store.new_id()
    staging = store.incoming(job_id)
    budget = [max_upload]
    try:
        inputs = {}
        for role, source in files.items():
            name = role  # an uploaded file's own name never becomes a path
            size = _save_upload(source, staging / name, budget)
            if size == 0:
                raise _status(Diff2LipError(f"the {role} upload is empty"), 422)
            try:
                check_media(staging / name, role)
            except Diff2LipError as e:
                raise _status(e, 415) from None
            inputs[role] = name
        store.submit(job_id, inputs, options)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return job_id


def accept_paths(
    store: JobStore, paths: dict[str, str | Path], fields: dict[str, Any], max_upload: int
) -> str:
    """:func:`accept_job` for files already on disk (the browser page's uploads): role → path."""
    with contextlib.ExitStack() as stack:
        files = {role: stack.enter_context(open(path, "rb")) for role, path in paths.items()}
        return accept_job(store, files, fields, max_upload)


def _status(error: Diff2LipError, status: int) -> Diff2LipError:
    error.status = status  # type: ignore[attr-defined]
    return error


def worker_devices(device: str, workers: int | None) -> list[str]:
    """The device of each worker: ``workers`` of them (default: one per CUDA GPU, else one), spread over
    the GPUs in turn when ``device`` is ``auto`` or ``cuda``; else all on ``device``."""
    gpus = 0
    if device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count()
    count = workers if workers is not None else max(1, gpus)
    if gpus:
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [device] * count


def create_app(settings: ServeSettings, *, load_pipeline: Any = None) -> Any:
    """The FastAPI app (workers start with it and stop with it)."""

    store_box: dict[str, Any] = {}
    devices = worker_devices(settings.device, settings.workers)

    def loader(device: str) -> Any:
        """What a worker on ``device`` calls (once, in its thread) to load the model."""
        if load_pipeline is not None:
            return load_pipeline

        def load() -> Any:
            from diff2lip.inference.pipeline import Diff2LipPipeline
            from diff2lip.models.named import resolve_model

            return Diff2LipPipeline.from_pretrained(resolve_model(settings.checkpoint), device=device)

        return load

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        store = JobStore(settings.data_dir)
        workers = [
            Worker(store, loader(device), index=i, keep_s=settings.keep_hours * 3600.0)
            for i, device in enumerate(devices)
        ]
        store_box.update(store=store, workers=workers)
        for w in workers:
            w.start()
        try:
            yield
        finally:
            for w in workers:
                w.stop.set()
            with store.wakeup:
                store.wakeup.notify_all()
            for w in workers:
                w.join(timeout=30)
            store.close()

    app = FastAPI(
        title="diff2lip",
        summary="Lip-sync a video to a speech track (Diff2Lip, WACV 2024): a job API and a browser page.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store_box = store_box

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        token = settings.token
        if token is None:
            return await call_next(request)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.cookies.get(COOKIE) or request.query_params.get("token")
        if given is None or not hmac.compare_digest(given, token):
            return JSONResponse(
                {"detail": "a token is required: Authorization: Bearer TOKEN"}, status_code=401
            )
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def store() -> JobStore:
        return store_box["store"]

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        workers = store_box.get("workers", [])
        errors = [w.load_error for w in workers if w.load_error]
        return {
            "ok": not errors,
            "workers": len(workers),
            "ready": sum(w.ready.is_set() and not w.load_error for w in workers),
            "model": settings.checkpoint,
            "jobs": store().counts(),
            "errors": errors,
        }

    @app.post("/api/v1/jobs", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and int(length) > settings.max_upload:
            return JSONResponse(
                {"detail": f"upload larger than {settings.max_upload} bytes"}, status_code=413
            )
        form = await request.form(max_files=3, max_fields=len(JOB_FIELDS) + 3)
        try:
            files: dict[str, BinaryIO] = {}
            fields: dict[str, Any] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    role = "video" if key in ("video", "image") else key
                    if role not in ("video", "audio") or role in files:
                        return JSONResponse({"detail": f"unexpected file field '{key}'"}, status_code=422)
                    files[role] = value.file
                else:
                    fields[key] = value
            missing = [r for r in ("video", "audio") if r not in files]
            if missing:
                return JSONResponse(
                    {"detail": f"missing file field(s): {', '.join(missing)}"}, status_code=422
                )
            try:
                job_id = accept_job(store(), files, fields, settings.max_upload)
            except UploadTooLarge:
                return JSONResponse(
                    {"detail": f"upload larger than {settings.max_upload} bytes"}, status_code=413
                )
            except Diff2LipError as e:
                return JSONResponse({"detail": str(e)}, status_code=getattr(e, "status", 422))
        finally:
            await form.close()
        return JSONResponse({"id": job_id, "state": "queued"}, status_code=202)

    @app.get("/api/v1/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return [j.to_json() for j in store().list()]

    def job_or_404(job_id: str) -> Any:
        job = store().get(job_id) if job_id.isalnum() else None
        if job is None:
            raise HTTPException(status_code=404, detail="no such job")
        return job

    @app.get("/api/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return job_or_404(job_id).to_json()

    @app.get("/api/v1/jobs/{job_id}/result")
    def get_result(job_id: str) -> Any:
        job = job_or_404(job_id)
        path = store().result_path(job.id)
        if job.state != "done" or not path.is_file():
            raise HTTPException(status_code=409, detail=f"job is {job.state}: no result")
        return FileResponse(path, media_type="video/mp4", filename=f"diff2lip-{job.id[:8]}.mp4")

    @app.delete("/api/v1/jobs/{job_id}")
    def delete_job(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        now = store().cancel(job.id)
        return {"id": job.id, "state": "removed" if now is None else now.state}

    if settings.ui:
        from diff2lip.serve.ui import mount_ui

        mount_ui(app, settings, store)
    return app


def _version() -> str:
    from diff2lip import __version__

    return __version__
