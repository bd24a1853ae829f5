"""The browser page of ``diff2lip serve`` (Gradio), mounted at ``/`` of the API's app."""

from __future__ import annotations

from typing import Any


def mount_ui(app: Any, settings: Any, store: Any) -> None:
    """Mount the page on ``app``; ``store()`` returns the running :class:`~diff2lip.serve.jobs.JobStore`."""
    return None
