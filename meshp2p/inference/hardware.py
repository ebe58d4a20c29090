"""What this machine can offer the mesh: RAM, VRAM and the GPU's name.

VRAM comes from `nvidia-smi` when there is one (other vendors: 0 for now, the node then serves from RAM).
`--max-vram` caps what is advertised; the GPU's name is only shared with `--enumerate-host`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

NVIDIA_SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Hardware:
    ram_mb: int
    vram_mb: int
    gpu_name: str | None


def detect_hardware() -> Hardware:
    vram_mb, gpu = _nvidia()
    return Hardware(ram_mb=_ram_mb(), vram_mb=vram_mb, gpu_name=gpu)


def _ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 0


def _nvidia() -> tuple[int, str | None]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0, None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0, None
    names, total = [], 0
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        try:
            total += int(float(mem.strip()))
            names.append(name.strip())
        except ValueError:
            continue
    return total, (", ".join(names) or None)
