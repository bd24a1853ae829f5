"""CPU facts that decide how the model runs fastest here (issue 3: "bf16 must be offered on CPUs where it
is faster").

bf16 matrix/convolution kernels only beat fp32 on CPUs with native bf16 instructions: ``avx512_bf16``
(Cooper Lake, Zen 4 and newer) or ``amx_bf16`` (Sapphire Rapids and newer). Without them oneDNN converts
bf16 to fp32 around every kernel, so bf16 autocast is *slower* than fp32 (measured in
``benchmarks/RESULTS.md``, "UNet speed"). :func:`cpu_supports_fast_bf16` reads the CPU flags so a
pipeline or CLI can recommend (or default to) bf16 only where it pays.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of native bf16 arithmetic; any one of them makes bf16 worth offering."""

_INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as ``/proc/cpuinfo`` describes it (Linux); empty fields elsewhere."""

    model_name: str
    flags: frozenset[str]
    logical_cpus: int

    @property
    def fast_bf16(self) -> bool:
        """True when the CPU has native bf16 arithmetic (see :data:`FAST_BF16_FLAGS`)."""
        return any(f in self.flags for f in FAST_BF16_FLAGS)

    def simd_summary(self) -> str:
        """The vector-ISA flags that matter for the UNet's kernels, space separated (``-`` if none)."""
        return " ".join(f for f in _INTERESTING_FLAGS if f in self.flags) or "-"


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo``: the first ``model name`` and ``flags`` lines, and the number
    of ``processor`` entries."""
    model = ""
    flags: frozenset[str] = frozenset()
    count = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model_name=model, flags=flags, logical_cpus=count)


def cpu_info(cpuinfo_path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """The :class:`CpuInfo` of this machine; on systems without ``/proc/cpuinfo`` the model name is
    :func:`platform.processor` and no flags are known (so bf16 is not recommended)."""
    path = Path(cpuinfo_path)
    if path.is_file():
        return parse_cpuinfo(path.read_text(errors="replace"))
    return CpuInfo(model_name=platform.processor(), flags=frozenset(), logical_cpus=0)


def cpu_supports_fast_bf16(cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool:
    """Whether bf16 runs faster than fp32 on this CPU (native ``avx512_bf16`` or ``amx_bf16``)."""
    return cpu_info(cpuinfo_path).fast_bf16
