"""`meshp2p status`'s hardware line, from the `hardware` field of /api/status."""

from __future__ import annotations

from meshp2p.cli.status import hardware_line


def test_the_hardware_line_shows_what_is_known() -> None:
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization_pct": 87.0, "vram_used_mb": 61234.0,
           "vram_total_mb": 81559.0, "temperature_c": 64.0}
    unknown = {"index": 1, "name": "NVIDIA GH200 480GB", "utilization_pct": None, "vram_used_mb": 1024.0,
               "vram_total_mb": 97871.0, "temperature_c": None}
    line = hardware_line({"cpu_pct": 12.3, "ram_used_mb": 3174.4, "ram_total_mb": 15974.4, "gpus": [gpu, unknown]})
    assert line == ("hardware: CPU 12% · RAM 3.1/15.6 GB · GPU0 NVIDIA H100 80GB HBM3 87% 59.8/79.6 GB 64°C · "
                    "GPU1 NVIDIA GH200 480GB 1.0/95.6 GB")
    assert hardware_line({"cpu_pct": None, "ram_used_mb": None, "ram_total_mb": None, "gpus": []}) == \
        "hardware: unknown"
