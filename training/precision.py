"""The float type the CNN trains in: bfloat16 mixed precision only on CPUs that compute bfloat16 natively.

Without native instructions TensorFlow emulates bfloat16 through float32 conversions, which is slower
than float32 itself, so `auto` never picks it there. The choice is read from the CPU rather than
assumed: the project's machines differ (AMD EPYC with AVX2 only, Xeons with AVX-512 and AVX512_BF16).
"""

from __future__ import annotations

from pathlib import Path

# Linux /proc/cpuinfo flags of instructions that compute on bfloat16: AVX512_BF16 and Intel AMX.
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CHOICES = ("auto", "float32", "bfloat16")


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (False when it cannot be told)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BFLOAT16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def training_policy(choice: str = "auto", cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The Keras dtype policy for `choice` (one of CHOICES): "mixed_bfloat16" or "float32"."""
    if choice not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "auto":
        return "mixed_bfloat16" if native_bfloat16(cpuinfo) else "float32"
    return "mixed_bfloat16" if choice == "bfloat16" else "float32"
