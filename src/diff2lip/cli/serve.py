"""``diff2lip serve``: a browser page and an HTTP job API over one durable job queue."""

from __future__ import annotations

import argparse

ORDER = 16

EPILOG = """\
Opens http://HOST:PORT/ (the page) and the job API under /api/v1 (schema: /docs, /openapi.json):

  curl -F video=@talk.mp4 -F audio=@speech.wav -F steps=2 http://127.0.0.1:7860/api/v1/jobs
  curl http://127.0.0.1:7860/api/v1/jobs/ID                      # state, stage, progress, eta_s, summary
  curl -o synced.mp4 http://127.0.0.1:7860/api/v1/jobs/ID/result
  curl -X DELETE http://127.0.0.1:7860/api/v1/jobs/ID             # cancel, or remove a finished job

Jobs live in DATA_DIR (SQLite + one folder per job): a server that is killed and started again loses no
accepted job (a job that was running runs again). Without --checkpoint the bundled demo model is used; it
only knows synthetic faces — real faces need --checkpoint paper (the converted official model) or one you
trained. Binding an address other than loopback needs --token; with a token every route needs it
(Authorization: Bearer TOKEN, or ?token=TOKEN once in the browser).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.models.named import names_help

    p = subparsers.add_parser(
        "serve",
        help="browser page + HTTP job API (pip install -e '.[web]')",
        description="Serve the lip-sync page and the HTTP job API over one durable job queue.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        default="demo",
        metavar="MODEL",
        help=f"model directory, official .pt, or {names_help()} (default: demo)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where jobs, uploads and results live (default: $DIFF2LIP_HOME/serve, i.e. ~/.diff2lip/serve)",
    )
    p.add_argument(
        "--token", default=None, help="require this token on every route (default: none; needed off loopback)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="jobs run at once, each with its own model copy (default 1)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--max-upload", default="2G", metavar="SIZE", help="largest upload per job (default 2G)")
    p.add_argument(
        "--keep-hours",
        type=float,
        default=24.0,
        help="finished jobs and their files are deleted after this (default 24)",
    )
    p.add_argument("--no-ui", action="store_true", help="the job API only (default: page and API)")
    p.set_defaults(func=run)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diff2lip.errors import Diff2LipError
    from diff2lip.inference.memory import parse_size
    from diff2lip.models.named import diff2lip_home, resolve_model

    if args.host not in LOOPBACK and not args.token:
        raise Diff2LipError(
            f"--host {args.host} would let other machines use this server: give --token TOKEN as well "
            "(or bind 127.0.0.1)"
        )
    if args.workers is not None and args.workers < 1:
        raise Diff2LipError(f"--workers must be >= 1, got {args.workers}")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise Diff2LipError(f"diff2lip serve needs the web extra: pip install -e '.[web]' ({e})") from None
    from diff2lip.serve.app import ServeSettings, create_app
    from diff2lip.serve.jobs import JobStore

    resolve_model(args.checkpoint)  # a missing model: one line now, not in a worker
    data_dir = Path(args.data_dir) if args.data_dir else diff2lip_home() / "serve"
    JobStore(data_dir).close()  # a folder another server holds, or one that cannot be written: one line now
    settings = ServeSettings(
        data_dir=data_dir,
        checkpoint=args.checkpoint,
        device=args.device,
        workers=args.workers,
        token=args.token,
        max_upload=parse_size(args.max_upload),
        keep_hours=args.keep_hours,
        ui=not args.no_ui,
    )
    app = create_app(settings)
    print(
        f"diff2lip serve: http://{args.host}:{args.port}/  (API: /api/v1/jobs, schema: /docs; data: {data_dir})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
