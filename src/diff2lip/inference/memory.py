"""How much of a video ``generate`` holds at once, chosen from a memory budget (issue 18).

Peak memory of the streaming job does not grow with the video's length, but it grows with the frame size:
the decoded chunk, the next chunk being decoded, one frame's working copies, and x264's frames in flight
(about ``12 + lookahead`` frames; the ``medium`` preset's rate-control lookahead is 40). At 8K (100 MB per
RGB frame) the defaults (chunk 32, lookahead 40) need ~10 GB. :func:`plan_memory` picks the largest chunk
(up to ``--chunk-size``) and lookahead (up to the preset's) whose estimated peak fits the budget,
preferring, in order: the full chunk and lookahead; a chunk down to 8 frames; a shorter lookahead (20, 10,
5, 0); a chunk down to 1 frame. When even one frame with no lookahead does not fit, it raises one line
naming the memory needed and the memory available, before any work starts.

The budget (``--max-memory``) is the whole process's resident memory. By default it is the memory in use
when the job starts (the loaded model, the libraries) plus the smaller of 3 GiB and half of the RAM
available then (stretched to all of it when even one frame would not fit otherwise), and never more than
what is available. The estimate's constants were measured
(``benchmarks/memory_sweep.py``, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from diff2lip.errors import Diff2LipError

__all__ = ["MemoryPlan", "available_memory", "parse_size", "plan_memory", "process_rss"]

GiB = 1 << 30
MiB = 1 << 20
#: x264's rate-control lookahead per preset (its own defaults).
PRESET_LOOKAHEAD = {
    "ultrafast": 0,
    "superfast": 0,
    "veryfast": 10,
    "faster": 20,
    "fast": 30,
    "medium": 40,
    "slow": 50,
    "slower": 60,
    "veryslow": 60,
    "placebo": 60,
}
ENCODER_FRAMES = 9  # x264's frames besides the lookahead and its frame threads (references, b-frames)
SMALL_ENCODER_THREADS = (
    4  # x264 threads when the budget forces a shorter lookahead (it holds ~1.5 per thread)
)
WORKING_FRAMES = 3  # one frame's copies while pasting / converting for the encoder
DETECT_FRAMES = 8  # one frame's float32 working copy (4 bytes per value) while downscaling for detection
MODEL_MARGIN = 512 * MiB  # sampling activations and allocator slack beyond the memory in use at the start
DEFAULT_EXTRA = 3 * GiB  # default budget: memory in use + min(this, half the available RAM)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"4G"``, ``"4GB"``, ``"1500M"``, ``"2.5g"``, ``"123456"`` (bytes) → bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGTkmgt]?)(?:i?[Bb])?\s*", str(text))
    if m is None:
        raise Diff2LipError(f"--max-memory: cannot read '{text}' as a size (e.g. 4G, 1500M)")
    value = float(m[1]) * _UNITS[m[2].upper()]
    if value <= 0:
        raise Diff2LipError(f"--max-memory must be positive, got '{text}'")
    return int(value)


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def process_rss() -> int:
    """Resident memory of this process, bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def available_memory() -> int:
    """RAM available to new allocations without swapping (the kernel's estimate), bytes."""
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class MemoryPlan:
    """The chunk size and encoder lookahead chosen for one job, and why."""

    chunk_size: int
    lookahead: int | None  # None: the preset's own (not reduced)
    threads: int | None  # x264 threads; None: its own choice (not reduced)
    estimate: int  # estimated peak resident memory, bytes
    budget: int  # the budget it fits in, bytes
    reduced: bool  # whether the chunk or the lookahead is below what was asked for

    def describe(self) -> str:
        la = "" if self.lookahead is None else f", x264 lookahead {self.lookahead}"
        la += "" if self.threads is None else f", {self.threads} x264 threads"
        return f"chunk {self.chunk_size} frames{la} (~{gb(self.estimate)} of a {gb(self.budget)} budget)"


def decoder_frames(cpus: int | None = None) -> float:
    """RGB-frame equivalents FFmpeg's frame-threaded decoder holds: one YUV 4:2:0 frame (half an RGB
    frame) per thread, and it starts about one thread per core (at most 16)."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return (min(cpus, 16) + 1) / 2


def encoder_threads(cpus: int | None = None) -> int:
    """The threads x264 starts by default: 1.5 per core."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return max(1, (3 * cpus) // 2)


def estimate_peak(
    frame_bytes: int, chunk: int, lookahead: int, in_use: int, threads: int | None = None
) -> int:
    """Estimated peak resident memory (bytes) of a job on frames of ``frame_bytes`` (decoded RGB), with
    x264 running ``threads`` threads (default: its own choice)."""
    decode = 2 * chunk + decoder_frames()  # the chunk in hand, the next being decoded, the decoder's own
    encode = ENCODER_FRAMES + (encoder_threads() if threads is None else threads) + lookahead
    detect = (decode + DETECT_FRAMES) * frame_bytes
    # while generating, each decoded frame also keeps its YUV samples (half an RGB frame) for the writer
    generate = (decode + chunk + WORKING_FRAMES + encode) * frame_bytes
    return int(in_use + MODEL_MARGIN + max(detect, generate))


def _candidates(chunk_size: int, lookahead: int) -> list[tuple[int, int]]:
    floor = min(8, chunk_size)
    out = [(c, lookahead) for c in range(chunk_size, floor - 1, -1)]
    out += [(floor, la) for la in (20, 10, 5, 0) if la < lookahead]
    out += [(c, 0) for c in range(floor - 1, 0, -1)]
    return out


def plan_memory(
    width: int,
    height: int,
    *,
    chunk_size: int,
    preset: str = "medium",
    max_memory: int | None = None,
    in_use: int | None = None,
    available: int | None = None,
) -> MemoryPlan:
    """Choose the chunk size and x264 lookahead for ``width × height`` frames (see the module docstring).

    ``in_use`` / ``available`` default to this process's resident memory and the machine's available RAM.
    """
    if chunk_size < 1:
        raise Diff2LipError(f"--chunk-size must be >= 1, got {chunk_size}")
    in_use = process_rss() if in_use is None else in_use
    available = available_memory() if available is None else available
    ceiling = in_use + available
    budget = in_use + min(DEFAULT_EXTRA, available // 2) if max_memory is None else max_memory
    budget = min(budget, ceiling)
    frame_bytes = width * height * 3
    full = PRESET_LOOKAHEAD.get(preset, 40)
    # the default budget may stretch to all the available RAM before refusing; a given one may not
    budgets = [budget] if max_memory is not None or budget == ceiling else [budget, ceiling]
    for limit in budgets:
        for chunk, la in _candidates(chunk_size, full):
            # with a shortened lookahead, x264's frame threads are capped too (fewer frames in flight)
            threads = min(SMALL_ENCODER_THREADS, encoder_threads()) if la < full else None
            need = estimate_peak(frame_bytes, chunk, la, in_use, threads)
            if need <= limit:
                return MemoryPlan(
                    chunk_size=chunk,
                    lookahead=None if la == full else la,
                    threads=None if threads == encoder_threads() else threads,
                    estimate=need,
                    budget=limit,
                    reduced=chunk < chunk_size or la < full,
                )
    need = estimate_peak(frame_bytes, 1, 0, in_use, min(SMALL_ENCODER_THREADS, encoder_threads()))
    given = f"--max-memory {gb(max_memory)}" if max_memory is not None else "the default budget"
    raise Diff2LipError(
        f"{width}x{height} frames need about {gb(need)} even one frame at a time, but {given} allows "
        f"{gb(budgets[-1])} ({gb(available)} of RAM available, {gb(in_use)} in use): raise --max-memory, free "
        "memory, or scale the video down first"
    )
