"""A real ``diff2lip serve`` process for the server tests (uvicorn on 127.0.0.1, a free port)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest

ServeProcess = Callable[..., AbstractContextManager[tuple[str, subprocess.Popen]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(data_dir: Path, model: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``diff2lip serve --checkpoint MODEL --data-dir DATA EXTRA...``, wait until its workers are
    ready, yield ``(base URL, process)``; the process is always stopped (its log is shown on failure)."""
    port = free_port()
    cmd = [sys.executable, "-m", "diff2lip", "serve", "--checkpoint", str(model), "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), *extra]
    log_path = Path(data_dir).parent / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {extra[extra.index('--token') + 1]}"} if "--token" in extra else {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", headers=headers, timeout=2).json()["ready"] >= 1:
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready in 120 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def serve_process() -> ServeProcess:
    """``with serve_process(data_dir, model, *flags) as (base_url, process): ...``"""
    return _serve
