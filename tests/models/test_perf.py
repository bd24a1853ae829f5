"""CPU feature detection that decides whether bf16 is offered on the CPU (issue 3)."""

from __future__ import annotations

from pathlib import Path

from diff2lip.models.perf import cpu_info, cpu_supports_fast_bf16, parse_cpuinfo

_EPYC_MILAN = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
"""

_SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8
"""


def test_parse_cpuinfo_avx2_only_has_no_fast_bf16():
    info = parse_cpuinfo(_EPYC_MILAN)
    assert info.model_name == "AMD EPYC 7B13"
    assert info.logical_cpus == 2
    assert {"avx2", "fma"} <= info.flags
    assert not info.fast_bf16
    assert info.simd_summary() == "avx2 fma"


def test_parse_cpuinfo_native_bf16():
    info = parse_cpuinfo(_SAPPHIRE_RAPIDS)
    assert info.fast_bf16
    assert info.logical_cpus == 1
    assert info.simd_summary() == "avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16"
    assert parse_cpuinfo("flags : avx2 avx512_bf16\n").fast_bf16  # Zen 4 has avx512_bf16, no AMX


def test_cpu_supports_fast_bf16_reads_the_given_file(tmp_path: Path):
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    slow.write_text(_EPYC_MILAN)
    fast.write_text(_SAPPHIRE_RAPIDS)
    assert cpu_supports_fast_bf16(slow) is False
    assert cpu_supports_fast_bf16(fast) is True


def test_cpu_info_without_cpuinfo_recommends_no_bf16(tmp_path: Path):
    info = cpu_info(tmp_path / "missing")
    assert info.flags == frozenset()
    assert not info.fast_bf16
    assert info.simd_summary() == "-"
