#!/usr/bin/env python3
"""Measure the candidate designs of the ceiling (bench/servers/bare.py) side by side.

    python bench/tune_ceiling.py                     # every candidate, 3 rounds (~20 min)
    python bench/tune_ceiling.py --rounds 1 --only "recv_into 4 KiB fixed,as filed"
    python bench/tune_ceiling.py --json bench/TUNING.json
    python bench/tune_ceiling.py --micro             # only the cost of one read, recv against recv_into

Each candidate is bare.py with some of its tuning options, or the ceiling as it
was before it was tuned (bench/servers/bare.py at commit AS_FILED, taken from
git: recv(262144) per read, and the same with recv(65536), the issue's
comparison). Every candidate is first checked for correct echoes (sizes around
every header length, pipelined frames, a fragmented message, a ping, the close
handshake) with the `websockets` client, then measured on the scenarios the
ceiling stands for in bench/run.py: pingpong32, stream1k, stream1m, handshakes
and a burst of 2,000 connections. Rounds are interleaved (every candidate once
per scenario per round, in a rotated order) so that a noisy neighbour spreads
over all of them; each figure printed is the median over the rounds. The
result is a Markdown table for bench/README.md, "The ceiling".

--micro times what one read costs, alone, in one thread over a socketpair:
`recv(size)` against `recv_into` a preallocated buffer, for a 64 B message and
for a full read of 64 KiB, and allocating the buffer itself (once per
connection). Those figures move much less with a busy machine than throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import run  # bench/run.py, next to this file

AS_FILED = "eb01fbc"  # the last commit with the untuned ceiling

CANDIDATES: dict[str, list[str]] = {
    "as filed: recv(256 KiB)": ["@old", "262144"],
    "as filed with recv(64 KiB)": ["@old", "65536"],
    "recv_into 4 KiB fixed": ["--buffer", "4", "--max-buffer", "4"],
    "recv_into 16 KiB fixed": ["--buffer", "16", "--max-buffer", "16"],
    "recv_into 64 KiB fixed": ["--buffer", "64", "--max-buffer", "64"],
    "recv_into 256 KiB fixed": ["--buffer", "256", "--max-buffer", "256"],
    "default: recv_into 4 KiB growing to 256 KiB": [],
    "recv_into 16 KiB growing to 256 KiB": ["--buffer", "16", "--max-buffer", "256"],
    "recv 64 KiB fixed": ["--read", "recv", "--buffer", "64", "--max-buffer", "64"],
    "recv 256 KiB fixed": ["--read", "recv", "--buffer", "256", "--max-buffer", "256"],
    "default + send loop": ["--send", "send"],
    "default + TCP_NODELAY per socket": ["--nodelay", "socket"],
    "default without TCP_NODELAY": ["--nodelay", "none"],
    "default + threading.Thread": ["--threads", "threading"],
    "default + 256 KiB thread stacks": ["--stack-size", "256"],
}
SCENARIOS = ("pingpong32", "stream1k", "stream1m", "handshakes", "burst")
BURST = 2000


def old_ceiling(size: str, tmp: Path) -> Path:
    """bare.py as it was at AS_FILED, reading recv(size) each time."""
    source = subprocess.run(["git", "-C", str(run.REPO), "show", f"{AS_FILED}:bench/servers/bare.py"],
                            capture_output=True, text=True, check=True).stdout
    assert "want = 262144" in source
    path = tmp / f"bare_as_filed_{size}.py"
    path.write_text(source.replace("want = 262144", f"want = {size}"))
    return path


def check(cmd: list[str], fragments: bool = True) -> None:
    """Raise AssertionError unless the server echoes every message right and answers ping and close.

    fragments=False leaves out the fragmented message, which the ceiling as filed echoed wrong (every
    frame with FIN set).
    """
    from websockets.sync.client import connect

    server = run.Proc([run.PY] + cmd)
    try:
        with connect(server.url, compression=None, max_size=None, open_timeout=10, close_timeout=10) as ws:
            sizes = [0, 1, 125, 126, 127, 4095, 4096, 16384, 65535, 65536, 70000, 1 << 20, (3 << 20) + 5]
            for n in sizes:
                data = os.urandom(n)
                ws.send(data)
                assert ws.recv(timeout=10) == data, f"{n} bytes"
            batch = [os.urandom(i * 7919 % 70001) for i in range(60)] + ["text é", os.urandom(1 << 20)] * 2
            for m in batch:  # all sent before any echo is read: several frames per read
                ws.send(m)
            for m in batch:
                assert ws.recv(timeout=10) == m
            if fragments:
                ws.send(["frag", "mented"])
                assert ws.recv(timeout=10) == "fragmented"
            assert ws.ping(b"p").wait(10)
    finally:
        server.stop()


def micro() -> str:
    """The CPU cost of one read, recv(size) against recv_into, and of a connection's buffer: a Markdown table."""
    import socket
    import time

    def per_call(fn, n: int) -> float:
        best = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            best.append((time.process_time() - t0) / n * 1e6)
        return statistics.median(best)

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    small, chunk = bytes(64), bytes(65536)
    lines = ["| buffer | 64 B read: recv(size) µs | recv_into µs | 64 KiB read: recv(size) µs | recv_into µs | "
             "bytearray(size) µs |", "| --- " * 6 + "|"]
    for kib in (4, 16, 64, 256):
        size = kib * 1024
        buf = bytearray(size)
        view = memoryview(buf)

        def recv_small() -> None:
            a.send(small)
            b.recv(size)

        def into_small() -> None:
            a.send(small)
            b.recv_into(view)

        def recv_big() -> None:
            a.sendall(chunk)
            got = 0
            while got < 65536:
                got += len(b.recv(size))

        def into_big() -> None:
            a.sendall(chunk)
            got = 0
            while got < 65536:
                got += b.recv_into(view)

        def alloc() -> None:
            bytearray(size)

        cells = [per_call(recv_small, 20000), per_call(into_small, 20000), per_call(recv_big, 2000),
                 per_call(into_big, 2000), per_call(alloc, 20000)]
        lines.append(f"| {kib} KiB | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    a.close()
    b.close()
    return "\n".join(lines)


def measure(scenario: str, cmd: list[str], cfg: dict) -> dict:
    if scenario == "burst":
        return run.hold_run(cmd, BURST, BURST, cfg)
    return run.traffic_run(scenario, cmd, cfg)


def markdown(results: dict[str, dict[str, list[dict]]]) -> str:
    def med(runs: list[dict], key: str) -> float | None:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else None

    head = ("| candidate | pingpong32 msgs/s | µs CPU/msg | stream1k msgs/s | µs CPU/msg | stream1m MB/s | "
            "µs CPU/msg | handshakes/s | µs CPU/handshake | burst: CPU s to accept | RSS/conn KiB |")
    lines = [head, "| --- " * 11 + "|"]
    for name, by_scn in results.items():
        cells = [name]
        for scn, key in (("pingpong32", "msgs_per_s"), ("stream1k", "msgs_per_s"), ("stream1m", "mb_per_s"),
                         ("handshakes", "handshakes_per_s")):
            runs = by_scn.get(scn, [])
            cells.append(run.fmt(med(runs, key), ",.0f"))
            cells.append(run.fmt(med(runs, "cpu_us_per_msg"), ",.1f"))
        runs = by_scn.get("burst", [])
        cells.append(run.fmt(med(runs, "accept_cpu_s"), ".2f"))
        cells.append(run.fmt(med(runs, "rss_per_conn"), ",.1f", 1 / 1024))
        lines.append("| " + " | ".join(cells) + " |")
    others = [r["other_cpu_pct"] for by_scn in results.values() for runs in by_scn.values() for r in runs
              if isinstance(r.get("other_cpu_pct"), (int, float))]
    loadgen = {scn: [r["loadgen_cpu_pct"] for by_scn in results.values() for r in by_scn.get(scn, [])
                     if isinstance(r.get("loadgen_cpu_pct"), (int, float))] for scn in SCENARIOS[:4]}
    lines.append("")
    if others:
        lines.append(f"Other processes' CPU during the traffic runs: median {statistics.median(others):.0f}% of one "
                     f"CPU, at most {max(others):.0f}%. Load generator CPU, most of any run: "
                     + ", ".join(f"{scn} {max(v):.0f}%" for scn, v in loadgen.items() if v) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--micro", action="store_true", help="only time one read, recv against recv_into")
    args = parser.parse_args()
    if args.micro:
        print(micro())
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CANDIDATES)
    scenarios = [s for s in args.scenarios.split(",") if s]
    cfg = {"duration": 3.0, "warmup": 1.0, "conns_timeout": 90}
    run.setup(skip_install=False)

    with tempfile.TemporaryDirectory() as tmp:
        cmds = {}
        for name in names:
            opts = CANDIDATES[name]
            cmds[name] = [str(old_ceiling(opts[1], Path(tmp)))] if opts[:1] == ["@old"] else ["bare.py", *opts]
            check(cmds[name], fragments=opts[:1] != ["@old"])
            run.log(f"checked {name}")
        results: dict[str, dict[str, list[dict]]] = {name: {s: [] for s in scenarios} for name in names}
        for rnd in range(args.rounds):
            for scn in scenarios:
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in order:
                    try:
                        r = measure(scn, cmds[name], cfg)
                    except Exception as exc:  # noqa: BLE001 (a failed run is reported and left out)
                        run.log(f"  round {rnd + 1} {scn} {name}: ERROR {exc}")
                        continue
                    r["loadavg"] = run.loadavg()
                    results[name][scn].append(r)
                    run.log(f"  round {rnd + 1} {scn} {name}: {run.brief(r)}")
    if args.json:
        args.json.write_text(json.dumps({"machine": run.machine_info(), "rounds": args.rounds,
                                         "results": results}, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
