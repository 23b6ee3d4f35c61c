"""Helpers shared by the bench scripts: choosing real X-rays, summary statistics and printing tables."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CXR_BENCH_DATA", ROOT.parent / "shared" / "data" / "cxr"))
MODEL_DIR = Path(os.environ.get("CXR_BENCH_MODEL", ROOT / "models"))
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else "python3"


def image_files(count: int, data_dir: Path = DATA_DIR, labels: Sequence[str] = ("covid", "normal")) -> list[Path]:
    """`count` real radiographs spread evenly over the manifest (so over every source), never copied."""
    manifest = data_dir / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as handle:
            files = [data_dir / row["file"] for row in csv.DictReader(handle) if row["label"] in labels]
    else:
        files = sorted(data_dir.glob("*.png"))
    files = [f for f in files if f.is_file()]
    if not files:
        raise SystemExit(f"no images under {data_dir}; set CXR_BENCH_DATA to a folder of chest X-ray PNGs")
    step = max(1, len(files) // count)
    chosen = files[::step][:count]
    while len(chosen) < count:  # fewer files than asked for: reuse them
        chosen += files[: count - len(chosen)]
    return chosen


def read_images(count: int, data_dir: Path = DATA_DIR) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in image_files(count, data_dir)]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 1) -> str:
    """A Markdown table (readable in a terminal too)."""
    lines = [[fmt(cell, digits) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in lines)) if lines else len(str(h)) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in lines]
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def save_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=str) + "\n")


def rss_mib(pid: int) -> float:
    """Resident memory of one process, in MiB (NaN when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (NaN when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _system_cpu() -> tuple[float, float]:
    """(busy CPU seconds of processes at nice ≤ 0 plus the kernel, CPU seconds of niced processes) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + system + irq + softirq + steal) / tick, nice / tick


def _own_cpu() -> float:
    """CPU seconds of this process, its reaped descendants and its live descendants."""
    import resource

    total = sum(
        getattr(resource.getrusage(who), name)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for name in ("ru_utime", "ru_stime")
    )
    alive = {os.getpid()}
    grew = True
    while grew:
        found = {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _parent(int(e.name)) in alive}
        grew = not found <= alive
        alive |= found
    alive.discard(os.getpid())
    return total + sum(c for c in (cpu_seconds(pid) for pid in alive) if c == c)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2 :].split()[1])


class ForeignCpu:
    """CPU seconds that other people's processes used during a run (the machine's busy time less this
    benchmark's own and its descendants'), so that a benchmark on a shared machine says when its figures
    were taken on a busy one. Niced processes are counted apart (they yield the CPU to the benchmark)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.busy, self.niced = _system_cpu()
        self.own = _own_cpu()

    def result(self) -> dict[str, float]:
        busy, niced = _system_cpu()
        wall = time.perf_counter() - self.started
        foreign = max(0.0, (busy - self.busy) - (_own_cpu() - self.own))
        return {
            "wall_s": wall,
            "foreign_cpu_s": foreign,
            "foreign_niced_cpu_s": niced - self.niced,
            "foreign_share_of_machine": foreign / (wall * len(os.sched_getaffinity(0))) if wall else 0.0,
        }

    def line(self) -> str:
        r = self.result()
        return (
            f"Other processes on this machine used {r['foreign_cpu_s']:.0f} CPU-s during this {r['wall_s']:.0f} s run "
            f"({r['foreign_share_of_machine']:.0%} of its cores), plus {r['foreign_niced_cpu_s']:.0f} CPU-s at low "
            "priority" + (": figures taken on a busy machine." if r["foreign_share_of_machine"] > 0.05 else ".")
        )
