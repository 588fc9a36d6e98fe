#!/usr/bin/env python3
"""Where a threadws server's time goes under the handshakes load, by step of a connection's life.

    python bench/profile_handshakes.py [--seconds 10] [--rate 250] [--all-threads] [--raw out.txt] [--no-speedups]

Starts bench/servers/threadws_server.py, drives it with the handshakes
scenario's load (bench/loadgen/loadgen.js --mode handshake: 16 loops of
connect, one 64 B echo, close) and samples the server with py-spy
(`py-spy record --gil --nonblocking --format raw`) for --seconds: each sample
is the stack of the thread holding the GIL, so the samples add up to the time
the server spent running Python (and the C it calls with the GIL held, thread
creation included). Each sample is put in the first step below whose frames
its stack contains, and each step's samples become µs per connection: samples
/ rate / connections served in the window. The server's user and system CPU
per connection over the same window (/proc/PID/stat) are printed beside: the
system time (accept, the socket calls, the kernel's side of thread creation
and exit) runs mostly without the GIL, so no sample shows it.

--all-threads samples every thread py-spy deems running instead of the GIL
holder; on the benchmark machine py-spy counted threads blocked in recv and
in Queue.get as running, which is why the GIL holder is the default.

py-spy needs ptrace (root, or kernel.yama.ptrace_scope 0); it comes with the
bench extra.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import run  # bench/run.py, next to this file

# (step, frames that must all be on the stack), first match wins. Frames are "Class.function (file)".
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("accept loop: start the request's thread (threading.Thread.start)",
     ("ThreadingMixIn.process_request (socketserver.py)", "Thread.start (threading.py)")),
    ("accept loop: the rest (accept, Thread() objects, poll)", ("BaseServer.serve_forever (socketserver.py)",)),
    ("request thread: read the head (threadws._http.read_head)", ("read_head (threadws/_http.py)",)),
    ("request thread: parse the head (http.server parse_request -> email.parser)",
     ("_RequestHandler._parse (threadws/server.py)",)),
    ("Upgrader: check the request, build the 101", ("Upgrader._check (threadws/server.py)",)),
    ("Upgrader: check the request, build the 101", ("build_response (threadws/handshake.py)",)),
    ("Upgrader: parse the 101 back (handshake.parse_head for Conn.response_headers)",
     ("parse_head (threadws/handshake.py)",)),
    ("Conn.__init__: start the reader and writer threads", ("Conn.__init__ (threadws/connection.py)",
                                                           "Thread.start (threading.py)")),
    ("Conn.__init__: the rest (protocol, inbox, writer objects)", ("Conn.__init__ (threadws/connection.py)",)),
    ("Upgrader: send the 101, TCP_NODELAY, detach, take buffered bytes", ("Upgrader.upgrade (threadws/server.py)",)),
    ("handler: the echo (recv + send)", ("echo (threadws_server.py)",)),
    ("closing: the handler's Conn.close (waits for the end)", ("Conn.close (threadws/connection.py)",)),
    ("closing: reader answers the close frame", ("Conn._on_close_frame (threadws/connection.py)",)),
    ("closing: Conn._finish (joins the writer, closes the socket, ConnectionClosed)",
     ("Conn._finish (threadws/connection.py)",)),
    ("closing: writer shuts the socket down", ("Conn._shutdown (threadws/connection.py)",)),
    ("request thread: handler object setup and socketserver bookkeeping",
     ("_TCPServer.process_request_thread (threadws/server.py)",)),
    ("reader: recv and frames", ("Conn._read_loop (threadws/connection.py)",)),
    ("writer: sends, timers, waiting", ("Writer._run (threadws/writer.py)",)),
    ("thread start-up and exit inside threading (no run() on the stack)", ("Thread._bootstrap (threading.py)",)),
]
OTHER = "other"


def classify(raw: Path) -> tuple[collections.Counter[str], int]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}  # py-spy's short file names, no lines
        step = next((name for name, needs in STEPS if all(f in frames for f in needs)), OTHER)
        counts[step] += int(n)
        total += int(n)
    return counts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--all-threads", action="store_true", help="every running thread, not the GIL holder")
    parser.add_argument("--no-speedups", action="store_true", help="the server masks in pure Python")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = args.raw or Path("/tmp") / f"threadws-handshakes-{int(time.time())}.txt"

    server = run.Proc([run.PY, "threadws_server.py"] + (["--no-speedups"] if args.no_speedups else []))
    try:
        warmup = 1.0
        load = subprocess.Popen(["node", "loadgen.js", "--url", server.url, *run.TRAFFIC["handshakes"],
                                 "--duration", str(args.seconds + 2), "--warmup", str(warmup)],
                                cwd=run.LOADGEN, stdout=subprocess.PIPE, text=True)
        time.sleep(warmup + 0.5)
        cpu0, stat0 = server.cpu(), _stat(server.pid)
        spy = ["record", "--pid", str(server.pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate),
               "--nonblocking", "--format", "raw", "--output", str(raw)] + ([] if args.all_threads else ["--gil"])
        started = time.monotonic()
        subprocess.run([pyspy, *spy], check=True, capture_output=True)
        window = time.monotonic() - started
        cpu, stat1 = server.cpu() - cpu0, _stat(server.pid)
        out, _ = load.communicate(timeout=60)
        result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    finally:
        server.stop()
    conns = result["handshakes_per_s"] * window  # served while py-spy sampled
    user = (stat1[0] - stat0[0]) / run.CLK_TCK / conns * 1e6
    system = (stat1[1] - stat0[1]) / run.CLK_TCK / conns * 1e6
    counts, total = classify(raw)
    print(f"{result['handshakes_per_s']:,.0f} handshakes/s; per connection the server spent {user:,.0f} µs user "
          f"+ {system:,.0f} µs system CPU ({1e6 * cpu / conns:,.0f} µs); {total:,} samples of "
          f"{'running threads' if args.all_threads else 'the GIL holder'} at {args.rate}/s = "
          f"{total / args.rate / conns * 1e6:,.0f} µs per connection; raw stacks in {raw}\n")
    print("| step | share | µs per connection |\n| --- | --- | --- |")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {100 * n / total:.1f}% | {n / args.rate / conns * 1e6:,.0f} |")


def _stat(pid: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks of all the process's threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


if __name__ == "__main__":
    main()
