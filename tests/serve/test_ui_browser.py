"""The page of `diff2lip serve` in a real browser: a real server process with the tiny model, headless
Chromium driven by Selenium — upload, Generate, progress, live preview, result, side-by-side, reload."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


@pytest.fixture
def server(serve_process, tmp_path: Path, tiny_model_dir: Path) -> Iterator[str]:
    """A `diff2lip serve` process with the page, on a free port; yields its base URL."""
    with serve_process(tmp_path / "data", tiny_model_dir) as (url, _):
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (never skipped: CI installs chromium and chromium-driver)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
            pytest.fail(f"{exe} is missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, check: Callable[[], Any], timeout: float, driver: Any, tmp_path: Path) -> Any:
    """``check()``'s first truthy value within ``timeout`` s; else fail (page source kept in tmp_path)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element being re-rendered
            value = None
        if value:
            return value
        time.sleep(0.1)
    (tmp_path / "page.html").write_text(driver.page_source)
    driver.save_screenshot(str(tmp_path / "failed.png"))
    pytest.fail(f"timed out after {timeout:g} s waiting for {what} (page: {tmp_path / 'page.html'})")


def test_page_runs_a_job(server, browser, tmp_path, talking_clip, speech_wav):
    from selenium.webdriver.common.by import By

    def find(css: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, css)

    def text(css: str) -> str:
        return find(css).text.strip()

    def video_src(css: str) -> str:
        return find(css).get_attribute("src") or ""

    def wait(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
        return _wait(what, check, timeout, browser, tmp_path)

    def set_steps(value: str) -> None:
        find("#options button").click()  # open the options (rendered when first opened)
        steps = wait("the steps box", lambda: find("#opt-steps textarea, #opt-steps input"))
        wait("the options to open", steps.is_displayed)
        steps.send_keys(value)

    t0 = time.monotonic()
    browser.get(server + "/")
    wait("the page", lambda: find("#generate-button").is_displayed())
    assert not browser.find_elements(By.CSS_SELECTOR, "#demo-note")  # a real checkpoint: no demo note

    find("#generate-button").click()  # nothing uploaded yet: a one-line message, no job
    wait("the refusal", lambda: text("#progress") == "⚠ upload a video or image")

    find("#video-input input[type=file]").send_keys(str(talking_clip))
    find("#audio-input input[type=file]").send_keys(str(speech_wav))
    wait("the video upload", lambda: find('#video-input [aria-label="talk.mp4"]'))
    wait("the audio upload", lambda: browser.find_elements(By.CSS_SELECTOR, "#audio-input audio"))

    find("#preview-button").click()
    note = wait("the first-frame note", lambda: text("#first-note"))
    assert "face(s) in the first frame" in note, note
    assert find("#first-frame img").get_attribute("src")

    set_steps("1")
    find("#generate-button").click()
    seen: list[str] = []

    def finished() -> bool:
        line = text("#progress")
        if line and (not seen or seen[-1] != line):
            seen.append(line)
        return line.startswith(("done", "failed")) and bool(video_src("#result-video video"))

    wait("the result video", finished, timeout=120)
    assert seen[-1].startswith("done"), seen
    assert any(line.startswith(("queued", "running")) for line in seen[:-1]), seen  # it moved
    wait("the side-by-side video", lambda: video_src("#side-video video"), timeout=60)
    report = wait("the run report", lambda: find("#report textarea").get_attribute("value"))
    assert "frames" in report, report
    wait("the live preview", lambda: find("#live-preview img").get_attribute("src"))

    # the same job through the HTTP API, which still answers next to the page
    (job,) = _get(f"{server}/api/v1/jobs")  # the page's job, in the API's queue
    assert job["state"] == "done" and job["options"] == {"steps": 1}, job
    assert b"swagger" in _get(f"{server}/docs").lower()

    browser.save_screenshot(str(tmp_path / "page.png"))
    if os.environ.get("DIFF2LIP_SCREENSHOT"):
        target = Path(os.environ["DIFF2LIP_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "page.png", target)

    browser.refresh()  # a reload finds the job again (its id is kept in the browser)
    wait("the result after a reload", lambda: video_src("#result-video video"))
    assert text("#progress").startswith("done")
    first_result = video_src("#result-video video")

    # a second job with typed text instead of audio (espeak-ng on the server)
    find("#video-input input[type=file]").send_keys(str(talking_clip))
    wait("the video upload", lambda: find('#video-input [aria-label="talk.mp4"]'))
    find("#tts-text textarea, #tts-text input").send_keys("Good morning.")
    set_steps("1")
    find("#generate-button").click()

    def second_done() -> bool:
        src = video_src("#result-video video")
        return text("#progress").startswith("done") and bool(src) and src != first_result

    wait("the second result", second_done, timeout=120)
    jobs = _get(f"{server}/api/v1/jobs")
    assert [j["state"] for j in jobs] == ["done", "done"], jobs
    print(f"browser test: {time.monotonic() - t0:.1f} s, progress lines: {seen}")


# -- the page's pieces without a browser


def test_progress_line_and_demo_note(tmp_path):
    from diff2lip.serve.app import ServeSettings
    from diff2lip.serve.jobs import Job
    from diff2lip.serve.ui import build_ui, progress_line

    running = Job(id="a", state="running", stage="generating 32/68 frames", progress=0.63, eta_s=7.2)
    assert progress_line(running) == "running — generating 32/68 frames — 63 % — ETA 7 s"
    assert progress_line(Job(id="a", state="running", progress=0.0)) == "running — starting — 0 %"
    assert progress_line(Job(id="a", state="queued")).startswith("queued")
    done = Job(id="a", state="done", started=10.0, finished=135.0)
    assert progress_line(done) == "done — 100 % — took 2 min 05 s"
    assert progress_line(Job(id="a", state="failed", error="no face")) == "failed — no face"

    def note_shown(checkpoint: str) -> bool:
        ui = build_ui(ServeSettings(data_dir=tmp_path, checkpoint=checkpoint), store=lambda: None)
        return any("--checkpoint paper" in str(getattr(b, "value", "")) for b in ui.blocks.values())

    assert note_shown("demo") and not note_shown("paper")


def test_side_by_side_of_a_still_image(tmp_path, talking_clip):
    from PIL import Image

    from diff2lip.serve.ui import side_by_side
    from diff2lip.video.io import VideoReader, probe, read_all

    still = tmp_path / "face.png"
    Image.fromarray(read_all(talking_clip).frames[0][::2, ::2].copy()).save(still)  # 88x72: half size
    out = side_by_side(still, talking_clip, tmp_path / "sbs.mp4")
    info, src = probe(out), probe(talking_clip)
    assert (info.width, info.height) == (176 + 176, 144) and info.has_audio
    assert VideoReader(out).num_frames == VideoReader(talking_clip).num_frames
    assert abs(info.duration - src.duration) < 0.1
