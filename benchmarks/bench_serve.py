"""Load test of ``cellbench serve`` on loopback: latency, throughput, server memory.

Starts ``cellbench serve`` itself (one worker, on a free port), sends ``--requests``
uploads of ``--size`` x ``--size`` synthetic 16-bit images (:mod:`cellbench.synthetic`,
distinct images) with ``--concurrency`` in flight, once per answer format, and prints a
markdown table: p50 / p95 latency, throughput, errors, and the server's peak resident
memory (psutil when installed, else ``VmHWM`` of ``/proc/<pid>/status``). Every answer
must be 200; a run with errors exits 1.

Usage: python benchmarks/bench_serve.py [--model-dir results/models/synthetic/unet]
       [--requests 200] [--concurrency 8] [--size 512] [--formats json tiff] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(n: int, size: int) -> list[bytes]:
    import tifffile
    from cellbench.datasets.options import SyntheticOptions
    from cellbench.synthetic import generate_image

    spec = SyntheticOptions(height=size, width=size)
    out = []
    for seed in range(n):
        buf = io.BytesIO()
        tifffile.imwrite(buf, generate_image(seed, "fluorescent", spec)[0])
        out.append(buf.getvalue())
    return out


def _rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class _Memory(threading.Thread):
    """Samples the server's RSS every 50 ms (psutil if present), keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        try:
            import psutil

            self.proc = psutil.Process(pid)
        except ImportError:
            self.proc = None

    def sample(self) -> int:
        if self.proc is not None:
            return self.proc.memory_info().rss // 1024
        return _rss_kib(self.pid)[0]

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.05)


async def _load(url: str, images: list[bytes], n: int, concurrency: int, fmt: str):
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                data = images[i % len(images)]
                t0 = time.perf_counter()
                answer = await client.post(
                    f"{url}/segment",
                    params={"format": fmt},
                    files={"file": (f"img{i}.tif", data, "image/tiff")},
                )
                latencies.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return np.asarray(latencies), wall, errors


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "torch missing"
    return f"{len(os.sched_getaffinity(0))} CPUs ({cpu}), {gpu}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="results/models/synthetic/unet")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--formats", nargs="+", default=["json", "tiff"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    parser.add_argument("--distinct", type=int, default=16, help="distinct images sent")
    args = parser.parse_args()

    import httpx

    images = _images(args.distinct, args.size)
    port = _free_port()
    command = [str(Path(sys.executable).parent / "cellbench"), "serve"]
    command += ["--model-dir", args.model_dir, "--port", str(port)]
    command += ["--max-queue", str(max(16, args.concurrency))]
    if args.threads:
        command += ["--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp, Path(tmp, "server.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if server.poll() is not None:
                    print(Path(tmp, "server.log").read_text(), file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start in 180 s") from None
                    time.sleep(0.3)
            health = httpx.get(f"{url}/health").json()
            idle = _rss_kib(server.pid)[0]
            # warm up: first-call allocations are not what a user waits for
            asyncio.run(_load(url, images, 2, 1, "json"))
            rows, failed = [], False
            for fmt in args.formats:
                memory = _Memory(server.pid)
                memory.start()
                latencies, wall, errors = asyncio.run(
                    _load(url, images, args.requests, args.concurrency, fmt)
                )
                memory.stop.set()
                memory.join()
                failed |= bool(errors)
                p50, p95 = np.percentile(latencies, [50, 95])
                rows.append(
                    f"| {fmt} | {args.requests} | {args.concurrency} | {p50:.2f} | {p95:.2f} "
                    f"| {args.requests / wall:.2f} | {len(errors)} | {memory.peak / 1024:.0f} |"
                )
                if errors:
                    print(f"{fmt}: first error: {errors[0]}", file=sys.stderr)
            peak = _rss_kib(server.pid)[1]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"machine: {_machine()}; model {args.model_dir} ({health['family']}) on {health['device']}"
    )
    print(
        f"{args.size} x {args.size} uint16 images, {args.distinct} distinct; server idle RSS "
        f"{idle / 1024:.0f} MiB, peak RSS over the run (VmHWM) {peak / 1024:.0f} MiB\n"
    )
    print("| format | requests | concurrent | p50 s | p95 s | requests/s | errors | peak RSS MiB |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
