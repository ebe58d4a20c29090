"""How busy this machine is now: GPU utilisation, VRAM and temperature, CPU utilisation and RAM.

hardware.py says what the machine *has* (once, at start); this says how much of it is in use, for `/api/status`
and `/metrics`. GPUs are read from `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`, else
`rocm-smi ... --json`, whichever is on PATH; CPU from the deltas of `/proc/stat`'s first line between two reads;
RAM from `/proc/meminfo` (used = MemTotal - MemAvailable, as `free` counts it). Off Linux the /proc numbers are
None.

A read costs a process start (nvidia-smi takes 20-100 ms), so `UsageSampler` samples only when asked (a status or
metrics read) and at most every MIN_INTERVAL_S, in a worker thread (`trio.to_thread.run_sync`) so the event loop
never waits on it; every read in between gets the cached sample. The parsers are pure functions of the tools'
text, unit-tested against recorded outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

#: A sample younger than this is answered from the cache.
MIN_INTERVAL_S = 2.0
SMI_TIMEOUT_S = 5.0
#: The first sample's CPU window (later ones measure since the sample before).
FIRST_CPU_WINDOW_S = 0.1
NVIDIA_QUERY = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu"
ROCM_ARGS = ("--showproductname", "--showuse", "--showmeminfo", "vram", "--showtemp", "--json")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuUsage:
    index: int
    name: str
    #: None where the tool says `[N/A]` or `[Not Supported]`.
    utilization_pct: float | None
    vram_used_mb: float | None
    vram_total_mb: float | None
    temperature_c: float | None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "utilization_pct": self.utilization_pct,
                "vram_used_mb": self.vram_used_mb, "vram_total_mb": self.vram_total_mb,
                "temperature_c": self.temperature_c}


@dataclass(frozen=True)
class CpuTimes:
    """`/proc/stat`'s aggregate line: jiffies spent busy and in all, since boot."""

    busy: int
    total: int


@dataclass(frozen=True)
class HardwareUsage:
    """One sample; `gpu_tool` names where the GPU numbers came from (None: no tool, or it failed)."""

    sampled_at: float
    cpu_pct: float | None
    ram_used_mb: float | None
    ram_total_mb: float | None
    gpus: tuple[GpuUsage, ...]
    gpu_tool: str | None

    def to_json(self) -> dict[str, Any]:
        return {"sampled_at": self.sampled_at, "cpu_pct": self.cpu_pct, "ram_used_mb": self.ram_used_mb,
                "ram_total_mb": self.ram_total_mb, "gpu_tool": self.gpu_tool,
                "gpus": [g.to_json() for g in self.gpus]}


def _number(text: str) -> float | None:
    """A tool's number, or None for what it writes instead (`[N/A]`, `[Not Supported]`, `N/A`, empty)."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_nvidia_smi(text: str) -> tuple[GpuUsage, ...]:
    """`nvidia-smi --query-gpu=NVIDIA_QUERY --format=csv,noheader,nounits`: one GPU a line, fields in that order.
    A GPU's name may hold commas, so the numbers are taken from the right."""
    gpus = []
    for line in text.strip().splitlines():
        index, _, rest = line.partition(",")
        fields = rest.rsplit(",", 4)
        if len(fields) != 5 or _number(index) is None:
            continue
        name, util, used, total, temp = fields
        gpus.append(GpuUsage(int(float(index)), name.strip(), _number(util), _number(used), _number(total),
                             _number(temp)))
    return tuple(gpus)


def parse_rocm_smi(text: str) -> tuple[GpuUsage, ...]:
    """`rocm-smi ROCM_ARGS`: a JSON object of `cardN` objects whose keys are the table's headings (their case
    differs between ROCm releases: `Card series` / `Card Series`); VRAM is in bytes. Anything else: no GPUs."""
    try:
        data = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(data, dict):
        return ()
    gpus = []
    for card, info in data.items():
        if not (card.startswith("card") and card[4:].isdigit() and isinstance(info, dict)):
            continue
        fields = {str(k).lower(): str(v) for k, v in info.items()}
        used, total = _number(fields.get("vram total used memory (b)", "")), _number(
            fields.get("vram total memory (b)", ""))
        temp = next((t for key in ("temperature (sensor edge) (c)", "temperature (sensor junction) (c)")
                     if (t := _number(fields.get(key, ""))) is not None), None)
        gpus.append(GpuUsage(int(card[4:]), fields.get("card series") or fields.get("card model") or card,
                             _number(fields.get("gpu use (%)", "")), None if used is None else used / _MIB,
                             None if total is None else total / _MIB, temp))
    return tuple(sorted(gpus, key=lambda g: g.index))


def parse_meminfo(text: str) -> tuple[float, float] | None:
    """(used, total) in MiB from `/proc/meminfo` (kB values), used being total minus MemAvailable."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    total = values["MemTotal"] / 1024
    return total - values["MemAvailable"] / 1024, total


def parse_proc_stat(text: str) -> CpuTimes | None:
    """The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal (guest time is already in
    user and nice, so it is not added again); idle and iowait are not busy."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                jiffies = [int(p) for p in parts[1:9]]
            except ValueError:
                return None
            jiffies += [0] * (8 - len(jiffies))
            total = sum(jiffies)
            return CpuTimes(busy=total - jiffies[3] - jiffies[4], total=total)
    return None


def cpu_percent(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """Busy share of the jiffies between two reads, in percent; None without two reads that moved."""
    if before is None or after is None or after.total <= before.total:
        return None
    return round(100.0 * max(0, after.busy - before.busy) / (after.total - before.total), 1)


def _run(args: list[str]) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class UsageSampler:
    """Samples on demand, at most every MIN_INTERVAL_S (the module docstring says why); `latest` is the last one."""

    def __init__(self, *, proc: Path = Path("/proc"), which: Callable[[str], str | None] = shutil.which,
                 clock: Callable[[], float] = trio.current_time, wall_clock: Callable[[], float] | None = None) -> None:
        self.proc = proc
        self.which = which
        self.clock = clock
        self.wall_clock = wall_clock
        self.latest: HardwareUsage | None = None
        self._at: float | None = None
        self._cpu: CpuTimes | None = None
        self._lock = trio.Lock()

    async def read(self) -> HardwareUsage:
        """A sample at most MIN_INTERVAL_S old; concurrent readers share one sampling."""
        async with self._lock:
            now = self.clock()
            if self.latest is None or self._at is None or now - self._at >= MIN_INTERVAL_S:
                self.latest = await trio.to_thread.run_sync(self.sample)
                self._at = self.clock()
            return self.latest

    def sample(self) -> HardwareUsage:
        """Read everything now (blocking: a worker thread's job). The first read of CPU times is a pair
        FIRST_CPU_WINDOW_S apart, so even the first sample has a CPU share."""
        if self._cpu is None:
            self._cpu = parse_proc_stat(_read(self.proc / "stat") or "")
            if self._cpu is not None:
                time.sleep(FIRST_CPU_WINDOW_S)
        cpu = parse_proc_stat(_read(self.proc / "stat") or "")
        cpu_pct = cpu_percent(self._cpu, cpu)
        self._cpu = cpu if cpu is not None else self._cpu
        ram = parse_meminfo(_read(self.proc / "meminfo") or "")
        gpus, tool = self._gpus()
        return HardwareUsage(sampled_at=(self.wall_clock or time.time)(), cpu_pct=cpu_pct,
                             ram_used_mb=None if ram is None else round(ram[0], 1),
                             ram_total_mb=None if ram is None else round(ram[1], 1), gpus=gpus, gpu_tool=tool)

    def _gpus(self) -> tuple[tuple[GpuUsage, ...], str | None]:
        nvidia = self.which("nvidia-smi")
        if nvidia is not None:
            out = _run([nvidia, f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits"])
            if out is not None:
                return parse_nvidia_smi(out), "nvidia-smi"
        rocm = self.which("rocm-smi")
        if rocm is not None:
            out = _run([rocm, *ROCM_ARGS])
            if out is not None:
                return parse_rocm_smi(out), "rocm-smi"
        return (), None
