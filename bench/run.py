#!/usr/bin/env python3
"""Run the threadws benchmark suite and write bench/RESULTS.md.

    python bench/run.py                 # full run (~25 min), writes bench/RESULTS.md
    python bench/run.py --quick         # shorter runs, 1 repeat, 2,000 connections (~6 min)
    python bench/run.py --only pingpong32,conns

Every server is a separate process started fresh for each run of each
scenario; the load comes from one Node.js `ws` process (bench/loadgen). Server
CPU seconds come from /proc/PID/stat (utime + stime, all threads), peak RSS
from VmHWM in /proc/PID/status. Each scenario runs --repeats times and each
number reported is the median over the repeats. Ratios are against the bare
ceiling (bench/servers/bare.py) and `websockets` sync from the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import backplane_bench  # bench/, next to this file

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen"
SERVERS_DIR = BENCH / "servers"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

BASELINE = "websockets sync"
CEILING = "bare (ceiling)"
SERVERS = {
    "threadws": ["threadws_server.py"],
    "websockets sync": ["websockets_sync_server.py"],
    "websockets asyncio": ["websockets_asyncio_server.py"],
    "simple-websocket (Werkzeug)": ["simple_websocket_server.py"],
    CEILING: ["bare.py"],
}
# Without the C masking (the fallback where it couldn't be built), where C masking is in use: threadws in
# every scenario whose targets must also hold without it and in the streaming ones, where masking is most
# of the work; the ceiling in the streaming ones, to compare the fallback with.
PURE_VARIANT = "threadws, pure-Python masking"
CEILING_PURE = "bare (ceiling), pure-Python masking"
VARIANTS = {
    PURE_VARIANT: ("threadws", ["threadws_server.py", "--no-speedups"],
                   ("stream1k", "stream1m", "handshakes", "burst", "conns")),
    CEILING_PURE: (CEILING, ["bare.py", "--no-speedups"], ("stream1k", "stream1m")),
}

SCENARIOS = {
    "pingpong1": "Ping-pong, 1 connection, 64 B",
    "pingpong32": "Ping-pong, 32 connections, 64 B",
    "stream1k": "Streaming, 1 connection, 1 KiB messages, 64 in flight",
    "stream1m": "Streaming, 1 connection, 1 MiB messages, 4 in flight",
    "handshakes": "Handshakes per second (connect, one 64 B echo, close), 16 at a time",
    "burst": "CPU to accept a burst of connections (all connect at once, each echoes 64 B)",
    "conns": "Concurrent connections, each echoes 64 B and is held open, then all echo once more",
    "client": "Client side: 64 B request-response against a Node `ws` echo server",
    "backplane": "Hub fan-out to 1,000 clients: one process, and four on a Redis backplane (bench/backplane_bench.py)",
    "wss-pingpong32": "wss: Ping-pong, 32 connections, 64 B",
    "wss-stream1k": "wss: Streaming, 1 connection, 1 KiB messages, 64 in flight",
}
TRAFFIC = {
    "pingpong1": ["--mode", "pingpong", "--conns", "1", "--size", "64"],
    "pingpong32": ["--mode", "pingpong", "--conns", "32", "--size", "64"],
    "stream1k": ["--mode", "stream", "--conns", "1", "--size", "1024", "--inflight", "64"],
    "stream1m": ["--mode", "stream", "--conns", "1", "--size", str(1 << 20), "--inflight", "4"],
    "handshakes": ["--mode", "handshake", "--conns", "16"],
}
# The wss scenarios: their ws:// twin's traffic over TLS, against the servers that serve wss.
WSS = {"wss-pingpong32": "pingpong32", "wss-stream1k": "stream1k"}
WSS_SERVERS = ("threadws", "websockets sync", "websockets asyncio")
TRAFFIC.update({scn: TRAFFIC[twin] for scn, twin in WSS.items()})
CLIENTS = {"threadws": "threadws", "websockets sync": "websockets-sync", "websocket-client": "websocket-client"}


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def setup(skip_install: bool) -> None:
    if not (LOADGEN / "node_modules" / "ws").is_dir():
        if skip_install:
            sys.exit("bench/loadgen/node_modules is missing (run without --no-install)")
        log("npm ci in bench/loadgen ...")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN, check=True)
    missing = []
    for module in ("threadws", "websockets", "simple_websocket", "werkzeug", "websocket", "redis", "trustme"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        if skip_install:
            sys.exit(f"missing Python packages: {missing}")
        log(f"pip install -e '.[bench]' (missing {missing}) ...")
        subprocess.run([PY, "-m", "pip", "install", "-q", "-e", f"{REPO}[bench]"], check=True)
    # File descriptors: 8,000 connections need 8,000 on each side, and more for the listener.
    # websockets sync needs two per connection on the server (the socket and its selector's epoll fd).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, max(hard, 65536)))
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- processes

class Proc:
    """A server (or echo peer) process with its /proc numbers."""

    def __init__(self, cmd: list[str], cwd: Path = SERVERS_DIR) -> None:
        self.port = free_port()
        self.popen = subprocess.Popen(cmd + ["--port", str(self.port)], cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self.pid = self.popen.pid
        line = self._ready_line(20.0)
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"{cmd} did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.max_threads = self.threads()
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _ready_line(self, timeout: float) -> str:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.popen.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return out[0] if out else ""

    def _status(self, key: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
        return 0

    def cpu(self) -> float:
        """User + system CPU seconds of all the process's threads so far."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss(self) -> int:
        return self._status("VmRSS") * 1024

    def peak_rss(self) -> int:
        return self._status("VmHWM") * 1024

    def maps(self) -> int:
        """Memory mappings (vm.max_map_count bounds them)."""
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def threads(self) -> int:
        return self._status("Threads")

    def _sample(self) -> None:
        while self._sampling:
            self.max_threads = max(self.max_threads, self.threads())
            time.sleep(0.2)

    def stop(self) -> None:
        self._sampling = False
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def machine_busy() -> float:
    """CPU seconds all processes on the machine have spent busy (not idle, not waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK  # user .. steal, less idle and iowait


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_json(cmd: list[str], timeout: float, cwd: Path = LOADGEN) -> tuple[dict, float]:
    """Run a measuring process to its end; its last JSON line and the CPU seconds it used."""
    cpu0 = children_cpu()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    cpu = children_cpu() - cpu0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-1000:]}")
    return json.loads(lines[-1]), cpu


# ---------------------------------------------------------------- scenarios

def traffic_run(scenario: str, server_cmd: list[str], cfg: dict) -> dict:
    tls = tls_files() if scenario in WSS else None
    server = Proc([PY] + server_cmd + (["--certfile", tls["cert"], "--keyfile", tls["key"]] if tls else []))
    try:
        cpu0, busy0, t0 = server.cpu(), machine_busy(), time.monotonic()
        url = server.url.replace("ws://", "wss://", 1) if tls else server.url
        cmd = ["node", "loadgen.js", "--url", url, *TRAFFIC[scenario],
               "--duration", str(cfg["duration"]), "--warmup", str(cfg["warmup"]),
               *(["--ca", tls["ca"]] if tls else [])]
        result, lg_cpu = run_json(cmd, timeout=cfg["duration"] + cfg["warmup"] + 60)
        wall = cfg["duration"] + cfg["warmup"]
        cpu = server.cpu() - cpu0
        # What the rest of the machine (other users, not this server or its load generator) took meanwhile.
        other = machine_busy() - busy0 - cpu - lg_cpu
        result.update(server_cpu_s=cpu, peak_rss=server.peak_rss(),
                      threads=server.max_threads, loadgen_cpu_pct=100 * lg_cpu / wall,
                      other_cpu_pct=max(0.0, 100 * other / (time.monotonic() - t0)))
        # The server's CPU per message (per handshake) over the whole run: what it costs, whoever the bottleneck.
        if result.get("received_total"):
            result["cpu_us_per_msg"] = 1e6 * cpu / result["received_total"]
        if result.get("handshakes_total"):
            result["cpu_us_per_msg"] = 1e6 * cpu / result["handshakes_total"]
        return result
    finally:
        server.stop()


def read_line(pipe, timeout: float) -> str:
    """The next line from a child's stdout, or "" if none came within timeout seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(pipe.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def hold_run(server_cmd: list[str], conns: int, concurrency: int, cfg: dict) -> dict:
    """Open `conns` connections, `concurrency` handshakes at a time, hold them, then all echo once more.

    The server's CPU to accept is read when all are held (each has echoed once); RSS, threads
    and memory maps once every held connection has echoed a second message and a second has passed.
    """
    server = Proc([PY] + server_cmd)
    try:
        time.sleep(0.3)
        idle_rss, idle_threads, cpu0 = server.rss(), server.threads(), server.cpu()
        loadgen = subprocess.Popen(
            ["node", "loadgen.js", "--mode", "hold", "--url", server.url, "--conns", str(conns),
             "--size", "64", "--concurrency", str(concurrency), "--timeout", str(cfg["conns_timeout"]),
             "--echoTimeout", str(ECHO_TIMEOUT)],
            cwd=LOADGEN, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = read_line(loadgen.stdout, cfg["conns_timeout"] + 60) or "loadgen did not report"
        accept_cpu = server.cpu() - cpu0
        held = json.loads(line) if line.startswith("{") else {"held": 0, "error": line}
        line = read_line(loadgen.stdout, ECHO_TIMEOUT + 30) if line.startswith("{") else ""
        echoed = json.loads(line) if line.startswith("{") else {}
        time.sleep(1.0)  # let the server settle (threads parked, buffers freed)
        rss, threads, maps = server.rss(), server.threads(), server.maps()
        alive = server.popen.poll() is None
        try:
            loadgen.stdin.write("close\n")
            loadgen.stdin.close()
        except OSError:
            pass
        try:
            loadgen.wait(60)
        except subprocess.TimeoutExpired:
            pass
        if loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()
        n = held.get("held", 0)
        return {
            "held": n, "target": conns, "failed": held.get("failed"), "first_error": held.get("first_error"),
            "echoed": echoed.get("echoed"), "seconds_to_echo": echoed.get("last_echo_seconds"),
            "seconds_to_hold": held.get("seconds"), "accept_cpu_s": accept_cpu,
            "rss": rss, "idle_rss": idle_rss, "rss_per_conn": (rss - idle_rss) / n if n else None,
            "threads": threads, "idle_threads": idle_threads, "threads_per_conn": (threads - idle_threads) / n if n else None,
            "peak_rss": server.peak_rss(), "server_alive": alive, "maps": maps,
        }
    finally:
        server.stop()


def client_run(client: str, cfg: dict) -> dict:
    peer = Proc(["node", "loadgen.js", "--mode", "echo-server"], cwd=LOADGEN)
    try:
        cpu0 = peer.cpu()
        result, client_cpu = run_json([PY, str(BENCH / "clients" / "client.py"), CLIENTS[client], peer.url,
                                       "--duration", str(cfg["duration"]), "--warmup", str(cfg["warmup"])],
                                      timeout=cfg["duration"] + cfg["warmup"] + 60, cwd=REPO)
        result.update(peer_cpu_s=peer.cpu() - cpu0, client_total_cpu_s=client_cpu)
        return result
    finally:
        peer.stop()


_TLS_FILES: dict[str, str] = {}


def tls_files() -> dict[str, str]:
    """PEM files of a throwaway CA and a certificate for 127.0.0.1 it signed (trustme), made once per run."""
    if not _TLS_FILES:
        import atexit
        import tempfile

        import trustme

        tmp = Path(tempfile.mkdtemp(prefix="threadws-bench-tls-"))
        atexit.register(shutil.rmtree, tmp, True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(tmp / "cert.pem"), append=i > 0)
        cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
        ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        _TLS_FILES.update(cert=str(tmp / "cert.pem"), key=str(tmp / "key.pem"), ca=str(tmp / "ca.pem"))
    return _TLS_FILES


def median_of(runs: list[dict]) -> dict:
    """Each numeric field's median over the repeats (other fields from the first run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(values)
    out["repeats"] = len(runs)
    return out


def repeat(fn, n: int, label: str) -> dict:
    runs, errors = [], []
    for i in range(n):
        try:
            runs.append(fn())
        except Exception as exc:  # a crashed or refusing server is a result too
            errors.append(str(exc))
            log(f"  {label} run {i + 1}: ERROR {exc}")
    if not runs:
        return {"error": errors[0][:300]}
    result = median_of(runs)
    if errors:
        result["errors_runs"] = len(errors)
    return result


# ---------------------------------------------------------------- report

def machine_info() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    import websockets, simple_websocket, werkzeug, websocket  # noqa: E401

    def version(mod: object) -> str:
        return getattr(mod, "__version__", "?")

    ws_version = json.loads((LOADGEN / "node_modules" / "ws" / "package.json").read_text())["version"]
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(), "node": node,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": {"websockets": version(websockets), "simple-websocket": _dist_version("simple-websocket"),
                     "werkzeug": _dist_version("werkzeug"), "websocket-client": version(websocket),
                     "threadws": f"{_dist_version('threadws')} (masking in {masking()})",
                     "wsproto": _dist_version("wsproto"), "ws (Node)": ws_version},
        "loadavg_start": loadavg(),
        "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip(),
    }


def masking() -> str:
    """How the threadws servers mask by default: "C" (threadws._speedups) or "pure Python"."""
    from threadws import _frames  # the servers run this Python, in this environment

    return "C" if _frames.SPEEDUPS else "pure Python"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def fmt(value, spec: str = ",.0f", scale: float = 1.0) -> str:
    if value is None or not isinstance(value, (int, float)):
        return "—"
    return format(value * scale, spec)


def ratio(a, b) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


#: The issue's target for RSS per held connection, and how many must be held (all echoing) for it to count.
RSS_TARGET_KIB = 56
RSS_TARGET_CONNS = 8000
#: Seconds the load generator waits for the echoes of the all-echoing round (the conns and burst scenarios).
ECHO_TIMEOUT = 60


def check_targets(res: dict) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/n/a) rows: issue 14's targets, medians of one run."""
    rows = []

    def get(scn: str, server: str, key: str):
        return res.get(scn, {}).get(server, {}).get(key)

    def verdict(ok) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    def at_least(scn: str, server: str, key: str, other: str, factor: float, what: str, unit: str = "") -> None:
        r = ratio(get(scn, server, key), get(scn, other, key))
        label = "the bare ceiling" if other == CEILING else other
        rows.append((f"{what}{server_note(server)}: ≥ {factor:g}x {label}{unit}", fmt(r, ".2f") + "x",
                     verdict(None if r is None else r >= factor)))

    if "stream1k" in res:
        at_least("stream1k", "threadws", "msgs_per_s", CEILING, 1.0, "Streaming 1 KiB")
        # With 2 CPUs the load generator can set the pace here: the CPU each message costs the server says more.
        t, c = get("stream1k", "threadws", "cpu_us_per_msg"), get("stream1k", CEILING, "cpu_us_per_msg")
        rows[-1] = (rows[-1][0], f"{rows[-1][1]} (server CPU per message {fmt(t, '.1f')} vs {fmt(c, '.1f')} µs)",
                    rows[-1][2])
        at_least("stream1k", "threadws", "msgs_per_s", BASELINE, 1.8, "Streaming 1 KiB")
    if "stream1m" in res:
        at_least("stream1m", "threadws", "mb_per_s", BASELINE, 1.2, "Streaming 1 MiB", "'s MB/s")
    for server in ("threadws", PURE_VARIANT):
        if server not in res.get("handshakes", {}):
            continue
        at_least("handshakes", server, "handshakes_per_s", BASELINE, 2.0, "Handshakes/s")
        at_least("handshakes", server, "handshakes_per_s", CEILING, 0.5, "Handshakes/s")
    for server in ("threadws", PURE_VARIANT):
        if server not in res.get("burst", {}):
            continue
        t, c = get("burst", server, "accept_cpu_s"), get("burst", CEILING, "accept_cpu_s")
        r = ratio(t, c)
        n = get("burst", server, "target")
        complete = get("burst", server, "held") == n
        rows.append((f"CPU to accept a burst of {fmt(n)} connections{server_note(server)}: ≤ 3x the bare ceiling's",
                     f"{fmt(t, '.2f')} s vs {fmt(c, '.2f')} s ({fmt(r, '.2f')}x)"
                     + ("" if complete else f"; only {fmt(get('burst', server, 'held'))} held"),
                     verdict(None if r is None else r <= 3.0 and complete)))
    for server in ("threadws", PURE_VARIANT):
        if server not in res.get("conns", {}):
            continue
        r = res["conns"][server]
        per, held, echoed = r.get("rss_per_conn"), r.get("held"), r.get("echoed")
        enough = held is not None and held >= RSS_TARGET_CONNS
        rows.append((f"RSS per held connection{server_note(server)}: ≤ {RSS_TARGET_KIB} KiB with {RSS_TARGET_CONNS:,} "
                     "held", f"{fmt(per, ',.1f', 1 / 1024)} KiB; {fmt(held)} held",
                     verdict(None if per is None else per <= RSS_TARGET_KIB * 1024 and enough)))
        rows.append((f"{RSS_TARGET_CONNS:,} held connections all echoing{server_note(server)}: one more message each, "
                     f"all sent at once, every echo back within {ECHO_TIMEOUT} s", f"{fmt(echoed)} echoed"
                     + (f" in {fmt(r.get('seconds_to_echo'), '.1f')} s" if echoed == held else ""),
                     verdict(None if echoed is None else enough and echoed == held)))
    if "client" in res:
        at_least("client", "threadws", "msgs_per_s", "websocket-client", 1.0, "Client, 64 B request-response")
    if "pingpong32" in res:
        at_least("pingpong32", "threadws", "msgs_per_s", BASELINE, 1.2, "Ping-pong, 32 connections")
    if "pingpong1" in res:
        t, b = get("pingpong1", "threadws", "p50_us"), get("pingpong1", BASELINE, "p50_us")
        rows.append(("Ping-pong, 1 connection: p50 latency ≤ websockets sync",
                     f"{fmt(t, '.0f')} µs vs {fmt(b, '.0f')} µs", verdict(None if None in (t, b) else t <= b)))
    if "backplane" in res:
        r = res["backplane"].get("ratio")
        rows.append(("Hub fan-out on a Redis backplane: ≥ 0.8x the one-process rate", f"{fmt(r, '.2f')}x",
                     verdict(None if r is None else r >= backplane_bench.TARGET)))
    rows += wss_targets(res)
    return rows


def wss_targets(res: dict) -> list[tuple[str, str, str]]:
    """Over wss, threadws is not slower than websockets sync: msgs/s at least as high, p50 latency no higher."""
    rows = []
    for scn in WSS:
        if scn not in res:
            continue
        mine, base = res[scn].get("threadws", {}), res[scn].get(BASELINE, {})
        r = ratio(mine.get("msgs_per_s"), base.get("msgs_per_s"))
        rows.append((f"{SCENARIOS[scn]}: msgs/s ≥ websockets sync", f"{fmt(r, '.2f')}x",
                     "n/a" if r is None else ("PASS" if r >= 1.0 else "FAIL")))
        t, b = mine.get("p50_us"), base.get("p50_us")
        ok = None if not all(isinstance(x, (int, float)) for x in (t, b)) else t <= b
        rows.append((f"{SCENARIOS[scn]}: p50 latency ≤ websockets sync",
                     f"{fmt(t, '.2f', 1e-3)} ms vs {fmt(b, '.2f', 1e-3)} ms",
                     "n/a" if ok is None else ("PASS" if ok else "FAIL")))
    return rows


def wss_sections(res: dict) -> list[str]:
    """The wss tables: each server next to websockets sync over wss, and next to itself over ws://."""
    L = []
    for scn, twin in WSS.items():
        if scn not in res:
            continue
        L.append(f"## {SCENARIOS[scn]}\n")
        L.append("TLS 1.3 from the Node load generator (it verifies a throwaway trustme certificate); every server "
                 f"uses Python's `ssl`. \"vs ws://\" divides each server's msgs/s here by its own in `{twin}` "
                 "of this run: what TLS leaves of its speed.\n")
        extra = " MB/s |" if "stream" in scn else ""
        L.append(f"| server | msgs/s | vs ws sync (wss) | vs ws:// |{extra} p50 ms | p99 ms | server CPU s | "
                 "peak RSS MiB | max threads | loadgen CPU |")
        L.append("| --- " * (10 + bool(extra)) + "|")
        base = res[scn].get(BASELINE, {}).get("msgs_per_s")
        for server, r in res[scn].items():
            if "error" in r:
                L.append(f"| {server} | error: {r['error'][:120]} |" + " |" * (8 + bool(extra)))
                continue
            plain = res.get(twin, {}).get(server, {}).get("msgs_per_s")
            mbs = f" {fmt(r.get('mb_per_s'), ',.1f')} |" if extra else ""
            L.append(f"| {server} | {fmt(r.get('msgs_per_s'))} | {fmt(ratio(r.get('msgs_per_s'), base), '.2f')}x | "
                     f"{fmt(ratio(r.get('msgs_per_s'), plain), '.2f')}x |{mbs} "
                     f"{fmt(r.get('p50_us'), '.2f', 1e-3)} | {fmt(r.get('p99_us'), '.2f', 1e-3)} | "
                     f"{fmt(r.get('server_cpu_s'), '.2f')} | {fmt(r.get('peak_rss'), '.1f', 1 / 2**20)} | "
                     f"{fmt(r.get('threads'))} | {fmt(r.get('loadgen_cpu_pct'), '.0f')}% |")
        L.append("")
    return L


def server_note(server: str) -> str:
    return ", pure-Python masking" if server == PURE_VARIANT else ""


def echo_time(r: dict) -> str:
    """Seconds until every held connection had echoed the all-at-once message, or "> timeout"."""
    if r.get("echoed") is None:
        return "—"
    if r["echoed"] == r.get("held"):
        return fmt(r.get("seconds_to_echo"), ".2f")
    return f"> {ECHO_TIMEOUT}"


def hold_note(r: dict) -> str:
    note = []
    if r.get("held", 0) < r.get("target", 0):
        note.append(f"max reached {fmt(r.get('held'))}; {fmt(r.get('failed'))} failed")
        if r.get("first_error"):
            note.append(f"first error: {r['first_error']}")
    if r.get("echoed") is not None and r.get("echoed") != r.get("held"):
        note.append(f"{fmt(r.get('held', 0) - r['echoed'])} didn't echo again")
    if not r.get("server_alive", True):
        note.append("server died")
    return "; ".join(note)


def write_report(res: dict, info: dict, cfg: dict, path: Path, elapsed: float) -> None:
    L = []
    L.append("# threadws benchmark results\n")
    L.append(f"Written by `{cfg['command']}` on {info['date']} in {elapsed / 60:.1f} minutes "
             f"(threadws at commit `{info['git']}`). How to run and what is measured: [README.md](README.md).\n")
    L.append("| machine | |\n| --- | --- |")
    L.append(f"| CPUs (`nproc`) | {info['nproc']} |\n| CPU model | {info['cpu']} |\n| memory | {info['memory_gib']} GiB |")
    L.append(f"| kernel | {info['kernel']} |\n| Python | {info['python']} |\n| Node.js | {info['node']} |")
    L.append("| versions | " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + " |")
    L.append(f"| load average (1/5/15 min) | {info['loadavg_start']} at the start, {info.get('loadavg_end', '?')} at "
             "the end (it counts the benchmark's own threads too: the connections scenario's ~24,000 threads push "
             "it into the hundreds; above ~1 before the start means other work shared the CPUs) |")
    L.append(f"| settings | {cfg['repeats']} repeats per scenario (median reported), {cfg['warmup']} s warm-up + "
             f"{cfg['duration']} s measured per run, {cfg['conns']:,} connections held, bursts of {cfg['burst']:,} |\n")
    L.append("Ratios are against the bare ceiling (`bench/servers/bare.py`, the fastest thread-per-connection echo "
             "we could write: README.md, \"The ceiling\") and `websockets` sync from the same run. Server CPU is "
             "user + system seconds of the server process over the whole run (warm-up included); CPU/msg divides "
             "it by every message (handshake) the load generator got back over the run, so it says what a message "
             "costs the server whichever side was the bottleneck. Peak RSS is the server's VmHWM. Load-generator "
             "CPU is the Node process's CPU over the run, as a share of one core: near 100% means the load "
             "generator, not the server, set the pace (with 2 CPUs the two share the machine).\n")

    L.append("## Targets\n")
    L.append("| target | measured | result |\n| --- | --- | --- |")
    for target, measured, verdict in check_targets(res):
        L.append(f"| {target} | {measured} | **{verdict}** |")
    L.append("")

    for scn in ("pingpong1", "pingpong32", "stream1k", "stream1m", "handshakes"):
        if scn not in res:
            continue
        L.append(f"## {SCENARIOS[scn]}\n")
        handshake = scn == "handshakes"
        unit = "handshakes/s" if handshake else "msgs/s"
        key = "handshakes_per_s" if handshake else "msgs_per_s"
        extra = " MB/s |" if scn.startswith("stream") else ""
        per = "server CPU µs/handshake" if handshake else "server CPU µs/msg"
        L.append(f"| server | {unit} | vs ceiling | vs ws sync |{extra} {per} | p50 ms | p99 ms | server CPU s | "
                 f"peak RSS MiB | max threads | loadgen CPU |")
        L.append("| --- " * (11 + bool(extra)) + "|")
        base = res[scn].get(BASELINE, {}).get(key)
        top = res[scn].get(CEILING, {}).get(key)
        for server, r in res[scn].items():
            if "error" in r:
                L.append(f"| {server} | error: {r['error'][:120]} |" + " |" * (9 + bool(extra)))
                continue
            mbs = f" {fmt(r.get('mb_per_s'), ',.1f')} |" if extra else ""
            L.append(f"| {server} | {fmt(r.get(key))} | {fmt(ratio(r.get(key), top), '.2f')}x | "
                     f"{fmt(ratio(r.get(key), base), '.2f')}x |{mbs} {fmt(r.get('cpu_us_per_msg'), ',.1f')} | "
                     f"{fmt(r.get('p50_us'), '.2f', 1e-3)} | {fmt(r.get('p99_us'), '.2f', 1e-3)} | "
                     f"{fmt(r.get('server_cpu_s'), '.2f')} | {fmt(r.get('peak_rss'), '.1f', 1 / 2**20)} | "
                     f"{fmt(r.get('threads'))} | {fmt(r.get('loadgen_cpu_pct'), '.0f')}% |")
        others = [r["other_cpu_pct"] for r in res[scn].values() if isinstance(r.get("other_cpu_pct"), (int, float))]
        if others:
            L.append(f"\nOther processes on the machine used {statistics.median(others):.0f}% of one CPU during "
                     f"these runs (median over servers; at most {max(others):.0f}%).")
        L.append("")

    if "burst" in res:
        L.append(f"## {SCENARIOS['burst']}: {cfg['burst']:,}\n")
        L.append("| server | held | seconds to hold all | server CPU s to accept | vs ceiling | vs ws sync | "
                 "RSS/conn KiB | threads/conn | all echo again: seconds | note |")
        L.append("| --- " * 10 + "|")
        base = res["burst"].get(BASELINE, {}).get("accept_cpu_s")
        top = res["burst"].get(CEILING, {}).get("accept_cpu_s")
        for server, r in res["burst"].items():
            if "error" in r:
                L.append(f"| {server} | error: {r['error'][:120]} |" + " |" * 8)
                continue
            L.append(f"| {server} | {fmt(r.get('held'))} | {fmt(r.get('seconds_to_hold'), '.2f')} | "
                     f"{fmt(r.get('accept_cpu_s'), '.2f')} | {fmt(ratio(r.get('accept_cpu_s'), top), '.2f')}x | "
                     f"{fmt(ratio(r.get('accept_cpu_s'), base), '.2f')}x | "
                     f"{fmt(r.get('rss_per_conn'), ',.1f', 1 / 1024)} | {fmt(r.get('threads_per_conn'), '.2f')} | "
                     f"{echo_time(r)} | {hold_note(r)} |")
        L.append(f"\nAll {cfg['burst']:,} connections are opened at once (the load generator starts every "
                 "handshake together; every server listens with a backlog of `socket.SOMAXCONN`); each sends "
                 "64 B and waits for the echo. CPU to accept is the server's user + system CPU from before the "
                 "first connect until every connection has echoed; median of the rounds. Then every connection "
                 "sends 64 B more at the same moment: the last column is the time until the last echo.\n")

    L += wss_sections(res)

    if "conns" in res:
        L.append(f"## {SCENARIOS['conns']}: {cfg['conns']:,}\n")
        L.append("| server | held | echoed again | seconds until all echoed | seconds to hold all | "
                 "server CPU s to accept | RSS held MiB | "
                 "RSS/conn KiB | vs ceiling | vs ws sync | threads | threads/conn | memory maps | note |")
        L.append("| --- " * 14 + "|")
        base = res["conns"].get(BASELINE, {}).get("rss_per_conn")
        top = res["conns"].get(CEILING, {}).get("rss_per_conn")
        for server, r in res["conns"].items():
            if "error" in r:
                L.append(f"| {server} | error: {r['error'][:120]} |" + " |" * 12)
                continue
            L.append(f"| {server} | {fmt(r.get('held'))} | {fmt(r.get('echoed'))} | {echo_time(r)} | "
                     f"{fmt(r.get('seconds_to_hold'), '.1f')} | "
                     f"{fmt(r.get('accept_cpu_s'), '.2f')} | {fmt(r.get('rss'), ',.0f', 1 / 2**20)} | "
                     f"{fmt(r.get('rss_per_conn'), ',.1f', 1 / 1024)} | "
                     f"{fmt(ratio(r.get('rss_per_conn'), top), '.2f')}x | "
                     f"{fmt(ratio(r.get('rss_per_conn'), base), '.2f')}x | {fmt(r.get('threads'))} | "
                     f"{fmt(r.get('threads_per_conn'), '.2f')} | {fmt(r.get('maps'))} | {hold_note(r)} |")
        L.append("\nThe load generator opens the connections 4 handshakes at a time, each echoing 64 B once; once "
                 "all are held, every one sends 64 B more at the same moment (\"echoed again\" counts the echoes "
                 f"back within {ECHO_TIMEOUT} s, and the time until the last of them if all came). RSS/conn = (RSS once "
                 "that is done and a second has passed − RSS of the idle server) / connections held.\n")

    if "client" in res:
        L.append(f"## {SCENARIOS['client']}\n")
        L.append("| client | msgs/s | vs websockets sync | p50 µs | p99 µs | client CPU s |")
        L.append("| --- " * 6 + "|")
        base = res["client"].get(BASELINE, {}).get("msgs_per_s")
        for client, r in res["client"].items():
            if "error" in r:
                L.append(f"| {client} | error: {r['error'][:120]} | | | | |")
                continue
            L.append(f"| {client} | {fmt(r.get('msgs_per_s'))} | {fmt(ratio(r.get('msgs_per_s'), base), '.2f')}x | "
                     f"{fmt(r.get('p50_us'), '.0f')} | {fmt(r.get('p99_us'), '.0f')} | {fmt(r.get('cpu_s'), '.2f')} |")
        L.append("\nOne connection, one message in flight; each client in a process of its own; CPU is the client "
                 "process's (all threads) over the measured seconds.\n")

    if "backplane" in res:
        L.append(f"## {SCENARIOS['backplane']}\n")
        L.extend(backplane_bench.markdown(res["backplane"]))

    if info.get("notes"):
        # Said by hand in RESULTS.json ("machine" -> "notes"): where a section came from a later
        # run merged in, so that --rerender keeps it.
        L.append("## Notes on this report\n")
        L.extend(f"* {note}" for note in info["notes"])
        L.append("")
    path.write_text("\n".join(L))


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, 1 repeat, 2,000 connections")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--servers", default="", help="comma-separated server names (default: all)")
    parser.add_argument("--repeats", type=int, help="runs per scenario (default 3, --quick 1)")
    parser.add_argument("--conns", type=int, help="connections in the conns scenario (default 8000, --quick 2000)")
    parser.add_argument("--burst", type=int, default=2000, help="connections in the burst scenario (default 2000)")
    parser.add_argument("--out", type=Path, help="report path (default bench/RESULTS.md; bench/RESULTS-quick.md "
                                                  "with --quick)")
    parser.add_argument("--no-install", action="store_true", help="don't run npm ci / pip install")
    parser.add_argument("--rerender", type=Path, metavar="JSON",
                        help="measure nothing: write the report again from a run's JSON (to --out, default "
                             "bench/RESULTS.md)")
    args = parser.parse_args()
    if args.rerender:
        saved = json.loads(args.rerender.read_text())
        out = args.out or BENCH / "RESULTS.md"
        write_report(saved["results"], saved["machine"], saved["config"], out, saved["machine"].get("elapsed_s", 0))
        log(f"wrote {out} from {args.rerender}")
        return

    cfg = {
        "repeats": args.repeats or (1 if args.quick else 3),
        "duration": 1.5 if args.quick else 3.0,
        "warmup": 0.5 if args.quick else 1.0,
        "conns": args.conns or (2000 if args.quick else 8000),
        "conns_timeout": 90,
        "conns_concurrency": 4,
        "burst": args.burst,
        "command": "python bench/run.py" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else ""),
    }
    scenarios = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()] or list(SERVERS)
    out = args.out or BENCH / ("RESULTS-quick.md" if args.quick else "RESULTS.md")

    setup(args.no_install)
    if not shutil.which("node"):
        sys.exit("node is needed for the load generator")
    started = time.monotonic()
    info = machine_info()
    res: dict[str, dict] = {}
    for scn in scenarios:
        log(f"== {SCENARIOS[scn]}")
        res[scn] = {}
        if scn == "backplane":
            res[scn] = backplane_bench.run({"conns": 1000, "processes": 4, "size": 64, "window": 8,
                                            "duration": cfg["duration"], "warmup": cfg["warmup"],
                                            "repeats": cfg["repeats"]}, log)
            continue
        if scn == "client":
            for client in CLIENTS:
                res[scn][client] = repeat(lambda: client_run(client, cfg), cfg["repeats"], client)
                log(f"  {client}: {brief(res[scn][client])}")
            continue
        todo = [(s, SERVERS[s]) for s in servers if scn not in WSS or s in WSS_SERVERS]
        if masking() == "C":  # else the servers mask in pure Python already
            for name, (after, cmd, where) in VARIANTS.items():
                if scn in where and after in servers:
                    todo.insert([t[0] for t in todo].index(after) + 1, (name, cmd))
        for name, cmd in todo:
            if scn == "conns":
                result = repeat(lambda: hold_run(cmd, cfg["conns"], cfg["conns_concurrency"], cfg),
                                max(1, cfg["repeats"] - 1), name)
            elif scn == "burst":
                result = repeat(lambda: hold_run(cmd, cfg["burst"], cfg["burst"], cfg), cfg["repeats"], name)
            else:
                result = repeat(lambda: traffic_run(scn, cmd, cfg), cfg["repeats"], name)
            res[scn][name] = result
            log(f"  {name}: {brief(result)}")
    elapsed = time.monotonic() - started
    info["loadavg_end"] = loadavg()
    info["elapsed_s"] = elapsed
    write_report(res, info, cfg, out, elapsed)
    (out.with_suffix(".json")).write_text(json.dumps({"machine": info, "config": cfg, "results": res}, indent=1))
    log(f"wrote {out} ({elapsed / 60:.1f} min)")
    for target, measured, verdict in check_targets(res):
        log(f"  {verdict:4}  {target}: {measured}")


def brief(r: dict) -> str:
    keys = ("msgs_per_s", "handshakes_per_s", "mb_per_s", "cpu_us_per_msg", "p50_us", "p99_us", "server_cpu_s",
            "loadgen_cpu_pct", "other_cpu_pct", "held", "echoed", "rss_per_conn", "threads", "accept_cpu_s",
            "seconds_to_hold", "error")
    return ", ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys if k in r)


if __name__ == "__main__":
    main()
