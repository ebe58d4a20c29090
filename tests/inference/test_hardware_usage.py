"""The hardware parsers against the tools' outputs, and the sampler's cache. There is no GPU here: the GPU tools'
text below is in the shape their documentation and real runs give (nvidia-smi's csv with `nounits`, `[N/A]` for an
unsupported field; rocm-smi's JSON of `cardN` objects); the /proc text is this kind of machine's."""

from __future__ import annotations

import trio

from meshp2p.inference.hardware_usage import (
    CpuTimes,
    GpuUsage,
    UsageSampler,
    cpu_percent,
    parse_meminfo,
    parse_nvidia_smi,
    parse_proc_stat,
    parse_rocm_smi,
)

NVIDIA_SMI = """\
0, NVIDIA H100 80GB HBM3, 87, 61234, 81559, 64
1, NVIDIA GeForce RTX 4090, 0, 1, 24564, 35
2, NVIDIA GH200 480GB, [N/A], 1024, 97871, [Not Supported]
"""

ROCM_SMI = """{"card0": {"Temperature (Sensor edge) (C)": "45.0", "Temperature (Sensor junction) (C)": "48.0",
"GPU use (%)": "12", "VRAM Total Memory (B)": "25753026560", "VRAM Total Used Memory (B)": "1073741824",
"Card series": "Radeon RX 7900 XTX", "Card model": "0x744c"},
"card1": {"Temperature (Sensor junction) (C)": "40.0", "GPU use (%)": "N/A", "VRAM Total Memory (B)": "68702699520",
"VRAM Total Used Memory (B)": "0", "Card Series": "AMD Instinct MI210"},
"system": {"Driver version": "6.7.0"}}"""

PROC_STAT = """\
cpu  4705 356 584 3699176 23060 0 277 0 0 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
"""

MEMINFO = """\
MemTotal:       16314684 kB
MemFree:          391380 kB
MemAvailable:    8157340 kB
Buffers:          123456 kB
"""


def test_nvidia_smi_csv_one_gpu_a_line() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI)
    assert gpus[0] == GpuUsage(0, "NVIDIA H100 80GB HBM3", 87.0, 61234.0, 81559.0, 64.0)
    assert gpus[1].name == "NVIDIA GeForce RTX 4090" and gpus[1].temperature_c == 35.0
    assert gpus[2] == GpuUsage(2, "NVIDIA GH200 480GB", None, 1024.0, 97871.0, None)
    assert parse_nvidia_smi("0, A name, with, commas, 5, 10, 20, 30\n")[0].name == "A name, with, commas"
    assert parse_nvidia_smi("") == () and parse_nvidia_smi("NVIDIA-SMI has failed\n") == ()


def test_rocm_smi_json_cards_in_bytes_either_case_of_heading() -> None:
    first, second = parse_rocm_smi(ROCM_SMI)
    assert first == GpuUsage(0, "Radeon RX 7900 XTX", 12.0, 1024.0, 25753026560 / 2**20, 45.0)
    assert second.name == "AMD Instinct MI210" and second.utilization_pct is None and second.temperature_c == 40.0
    assert parse_rocm_smi("not json") == () and parse_rocm_smi("[]") == ()


def test_proc_stat_and_meminfo() -> None:
    times = parse_proc_stat(PROC_STAT)
    assert times == CpuTimes(busy=4705 + 356 + 584 + 277, total=4705 + 356 + 584 + 3699176 + 23060 + 277)
    assert cpu_percent(CpuTimes(100, 1000), CpuTimes(150, 1100)) == 50.0
    assert cpu_percent(None, times) is None and cpu_percent(times, times) is None
    used, total = parse_meminfo(MEMINFO) or (0.0, 0.0)
    assert total == 16314684 / 1024 and used == (16314684 - 8157340) / 1024
    assert parse_meminfo("MemTotal: 1 kB\n") is None and parse_proc_stat("") is None


async def test_the_sampler_reads_this_machine_at_most_every_two_seconds() -> None:
    now = [0.0]
    sampler = UsageSampler(which=lambda name: None, clock=lambda: now[0])  # no GPU tool on this machine
    first = await sampler.read()
    assert first.gpus == () and first.gpu_tool is None
    assert first.cpu_pct is not None and 0 <= first.cpu_pct <= 100
    assert first.ram_total_mb and first.ram_used_mb and 0 < first.ram_used_mb < first.ram_total_mb
    now[0] = 1.9
    assert await sampler.read() is first and sampler.latest is first
    now[0] = 2.0
    async with trio.open_nursery() as nursery:  # readers at once share one sampling
        results = []

        async def read() -> None:
            results.append(await sampler.read())

        for _ in range(3):
            nursery.start_soon(read)
    assert results[0] is not first and all(r is results[0] for r in results)
    assert first.to_json()["gpus"] == [] and set(first.to_json()) >= {"cpu_pct", "ram_used_mb", "ram_total_mb"}
