#!/usr/bin/env python3
"""Hub fan-out across processes on a Redis backplane, against one process without one.

    python bench/backplane_bench.py                       # 1,000 clients, 4 processes, 3 repeats
    python bench/backplane_bench.py --conns 200 --repeats 1 --duration 2

One publisher sends binary messages (64 B) to one server process, whose
Hub broadcasts them; 1,000 subscribers read them. Two set-ups, each server
process started fresh for every run:

* **one process**: every subscriber on one ``threadws.serve`` process, a
  plain Hub (no backplane);
* **N processes + Redis**: the subscribers spread evenly over N processes,
  each with a Hub on a RedisBackplane (one redis-server, started here on a
  free loopback port); the publisher's process reaches its own subscribers
  directly and the others through Redis;
* **one process + Redis**, for reference: the first set-up with its Hub on
  the backplane (every broadcast published, and skipped when it comes back),
  which shows what the backplane itself costs a process.

The load is bench/loadgen/fanout.js (Node ``ws``): at most --window messages
under way, a message being done when every subscriber has it, so no queue
grows and no one is dropped. Reported: deliveries per second (messages
received by subscribers, summed), p50/p99 latency from send to receipt (a
tenth of the subscribers sampled), server CPU (all processes) and Redis CPU.
The target (issue 15): the backplane costs at most 20% of the one-process
fan-out rate. bench/run.py runs this as its ``backplane`` scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "loadgen"
SERVER = BENCH / "servers" / "hub_server.py"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET = 0.8  # the backplane keeps at least this share of the one-process rate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Process:
    """A server process that prints ``READY`` when it listens."""

    def __init__(self, cmd: list[str], ready: str = "READY", timeout: float = 20.0) -> None:
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.popen.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or ready not in box[0]:
            self.stop()
            raise RuntimeError(f"{cmd} did not start: {box[:1]!r}")

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


class Redis:
    """redis-server on a free loopback port, nothing saved to disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is needed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="threadws-bench-redis-")
        self.popen = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.popen.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def one_run(processes: int, redis: Redis | None, cfg: dict) -> dict:
    """Start *processes* hub servers (on *redis* if given), drive them, stop them."""
    servers, ports = [], []
    try:
        for _ in range(processes):
            port = free_port()
            cmd = [PY, str(SERVER), "--port", str(port)] + (["--redis", redis.url] if redis else [])
            servers.append(Process(cmd))
            ports.append(port)
        cpu0 = [s.cpu() for s in servers]
        redis_cpu0 = redis.cpu() if redis else 0.0
        urls = ",".join(f"ws://127.0.0.1:{port}/" for port in ports)
        cmd = ["node", "fanout.js", "--urls", urls, "--pub", f"ws://127.0.0.1:{ports[0]}/pub",
               "--conns", str(cfg["conns"]), "--size", str(cfg["size"]), "--window", str(cfg["window"]),
               "--duration", str(cfg["duration"]), "--warmup", str(cfg["warmup"])]  # fmt: skip
        proc = subprocess.run(cmd, cwd=LOADGEN, capture_output=True, text=True,
                              timeout=cfg["duration"] + cfg["warmup"] + 180)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"error": proc.stderr[-500:] or "no output"}
        if "error" in result:
            raise RuntimeError(result["error"][:500])
        result["server_cpu_s"] = sum(s.cpu() for s in servers) - sum(cpu0)
        result["redis_cpu_s"] = (redis.cpu() - redis_cpu0) if redis else None
        result["processes"] = processes
        return result
    finally:
        for server in servers:
            server.stop()


def median_of(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(values)
    out["repeats"] = len(runs)
    return out


def run(cfg: dict, log=lambda *a: print(*a, file=sys.stderr, flush=True)) -> dict:
    """Both set-ups, cfg["repeats"] times each, alternating; medians. Needs node and npm ci done."""
    raise_fd_limit()
    redis = Redis()
    try:
        runs: dict[str, list[dict]] = {"one": [], "backplane": [], "one_backplane": []}
        for i in range(cfg["repeats"]):
            for name, processes, via in (("one", 1, None), ("backplane", cfg["processes"], redis),
                                         ("one_backplane", 1, redis)):
                try:
                    runs[name].append(one_run(processes, via, cfg))
                    log(f"  {name} run {i + 1}: {_brief(runs[name][-1])}")
                except Exception as exc:  # a failed run is a result too
                    log(f"  {name} run {i + 1}: ERROR {exc}")
    finally:
        redis.stop()
    out = {name: (median_of(r) if r else {"error": "every run failed"}) for name, r in runs.items()}
    one, many = out["one"].get("deliveries_per_s"), out["backplane"].get("deliveries_per_s")
    out["ratio"] = many / one if one and many else None
    out["config"] = {k: cfg[k] for k in ("conns", "processes", "size", "window", "duration", "warmup", "repeats")}
    return out


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it


def _brief(r: dict) -> str:
    return (f"{r['deliveries_per_s']:,.0f} deliveries/s, p50 {r['p50_us'] / 1000:.1f} ms, "
            f"p99 {r['p99_us'] / 1000:.1f} ms, {r['closed']} dropped, server CPU {r['server_cpu_s']:.1f} s")


def markdown(out: dict) -> list[str]:
    """The RESULTS.md section (bench/run.py puts it in its report)."""
    cfg = out["config"]
    lines = [
        f"| set-up | deliveries/s | vs one process | p50 ms | p99 ms | server CPU s | Redis CPU s | dropped |",
        "| --- " * 8 + "|",
    ]
    base = out["one"].get("deliveries_per_s")
    for name, label in (("one", "one process, no backplane"),
                        ("backplane", f"{cfg['processes']} processes + Redis backplane"),
                        ("one_backplane", "one process + Redis backplane (reference)")):  # fmt: skip
        r = out[name]
        if "error" in r:
            lines.append(f"| {label} | error: {r['error'][:100]} |" + " |" * 6)
            continue
        ratio = r["deliveries_per_s"] / base if base else None
        lines.append(
            f"| {label} | {r['deliveries_per_s']:,.0f} | {'—' if ratio is None else f'{ratio:.2f}x'} | "
            f"{r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['server_cpu_s']:.1f} | "
            f"{'—' if r.get('redis_cpu_s') is None else format(r['redis_cpu_s'], '.2f')} | {r['closed']:.0f} |"
        )
    lines.append(
        f"\n{cfg['conns']:,} subscribers, one publisher, {cfg['size']} B binary messages, at most {cfg['window']} "
        f"under way; {cfg['warmup']} s warm-up + {cfg['duration']} s measured, median of {cfg['repeats']}. "
        "A delivery is one message received by one subscriber; latency is from the publisher's send to "
        "the subscriber's receipt. Server CPU is all server processes' user + system seconds over the run.\n"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (LOADGEN / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN, check=True)
    out = run(vars(args))
    print("\n".join(markdown(out)))
    if out["ratio"] is not None:
        verdict = "PASS" if out["ratio"] >= TARGET else "FAIL"
        print(f"{verdict}: the backplane keeps {out['ratio']:.2f}x of the one-process rate (target ≥ {TARGET})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
