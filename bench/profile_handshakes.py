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

--all-threads samples every thread py-spy deems active instead of the GIL
holder: every runnable thread, including one just woken from recv that is
still waiting for a CPU, which on a busy machine is many of them; hence the
GIL holder by default.

Where Linux's `perf` is installed and allowed (kernel.perf_event_paranoid),
`perf stat` counts, over a second window as long as the first, what the kernel did for the server:
context switches, page faults, threads created (clone3), mmap/munmap (thread
stacks), futex calls (the GIL, locks, events) and all system calls, printed
per connection. Counts, unlike times, don't move with a busy machine.

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

# (step, frames that must all be on the stack), first match wins. Frames are "Class.function (file)";
# "file:PREFIX" matches any frame in a file whose name starts with PREFIX, "empty" a stack with no Python frame.
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
    ("thread start-up and exit in C (no Python frame: thread state, the GIL's first take and last drop)",
     ("empty",)),
    # The ceiling (bench/servers/bare.py, with --server bare).
    ("ceiling: accept, start the connection's thread", ("<module> (bare.py)",)),
    ("ceiling: the opening handshake", ("handshake (bare.py)",)),
    ("ceiling: echo and close", ("connection (bare.py)",)),
    # Samples whose stack py-spy read cut short (it reads a running process): the module tells what it was.
    ("stack cut short: email.parser (the request head or the 101)", ("file:email/",)),
    ("stack cut short: wsproto (the closing handshake's frames)", ("file:wsproto/",)),
    ("stack cut short: threading (thread objects, start, events)", ("file:threading.py",)),
]
OTHER = "other"
PERF_EVENTS = {
    "syscalls:sys_enter_accept4": "connections accepted (accept4)",
    "context-switches": "context switches",
    "page-faults": "page faults",
    "syscalls:sys_enter_clone3": "threads created (clone3)",
    "syscalls:sys_enter_mmap": "mmap",
    "syscalls:sys_enter_munmap": "munmap",
    "syscalls:sys_enter_futex": "futex calls",
    "raw_syscalls:sys_enter": "system calls in all",
}


def classify(raw: Path) -> tuple[collections.Counter[str], int]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f}  # py-spy's short file names
        files = {f.rpartition(" (")[2] for f in frames}
        step = next((name for name, needs in STEPS if all(_matches(need, frames, files) for need in needs)), OTHER)
        counts[step] += int(n)
        total += int(n)
    return counts, total


def _matches(need: str, frames: set[str], files: set[str]) -> bool:
    if need == "empty":
        return not frames
    if need.startswith("file:"):
        return any(f.startswith(need[5:]) for f in files)
    return need in frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--all-threads", action="store_true", help="every running thread, not the GIL holder")
    parser.add_argument("--no-speedups", action="store_true", help="the server masks in pure Python")
    parser.add_argument("--server", choices=["threadws", "bare"], default="threadws",
                        help="bare: profile the ceiling the same way")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = args.raw or Path("/tmp") / f"threadws-handshakes-{int(time.time())}.txt"

    script = "threadws_server.py" if args.server == "threadws" else "bare.py"
    server = run.Proc([run.PY, script] + (["--no-speedups"] if args.no_speedups else []))
    try:
        warmup = 1.0
        load = subprocess.Popen(["node", "loadgen.js", "--url", server.url, *run.TRAFFIC["handshakes"],
                                 "--duration", str(2 * args.seconds + 3), "--warmup", str(warmup)],
                                cwd=run.LOADGEN, stdout=subprocess.PIPE, text=True)
        time.sleep(warmup + 0.5)
        cpu0, stat0 = server.cpu(), _stat(server.pid)
        spy = ["record", "--pid", str(server.pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate),
               "--nonblocking", "--format", "raw", "--output", str(raw)] + ([] if args.all_threads else ["--gil"])
        started = time.monotonic()
        subprocess.run([pyspy, *spy], check=True, capture_output=True)
        window = time.monotonic() - started
        cpu, stat1 = server.cpu() - cpu0, _stat(server.pid)
        # Then perf, in a window of its own: tracing every system call slows them down.
        perf = _perf_stat(server.pid, args.seconds)
        counts_out = perf.communicate(timeout=args.seconds + 30)[1] if perf else ""
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
    perf_counts = {}
    for line in counts_out.splitlines():  # -x, output: value,unit,event,...
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0].replace(".", "").isdigit():
            perf_counts[fields[2]] = float(fields[0])
    accepted = perf_counts.pop("syscalls:sys_enter_accept4", 0)
    if accepted:
        print(f"\n| kernel events (perf stat, {accepted:,.0f} connections) | per connection |\n| --- | --- |")
        for event, n in perf_counts.items():
            print(f"| {PERF_EVENTS[event]} | {n / accepted:,.1f} |")


def _perf_stat(pid: int, seconds: float) -> subprocess.Popen[str] | None:
    """`perf stat` on the server (all its threads, new ones included) for `seconds`, if perf is there."""
    if not shutil.which("perf"):
        return None
    events = ",".join(PERF_EVENTS)
    return subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stat(pid: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks of all the process's threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


if __name__ == "__main__":
    main()
