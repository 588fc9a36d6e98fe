"""A threadws echo server whose process can be put at real limits, for tests/test_limits.py.

It answers one line on stdout for each line on stdin:

* ``port``: the port it listens on;
* ``threads N``: once the threads of earlier requests are gone, allow exactly N
  threads more than the process runs (RLIMIT_NPROC); ``ok``;
* ``files N``: allow exactly N open files more than the process has
  (RLIMIT_NOFILE); ``ok``;
* ``unlimit``: lift both; ``ok``;
* ``stats``: :meth:`threadws.Server.stats` as JSON.

RLIMIT_NPROC bounds the threads of all processes of a user, and doesn't bind
root: for ``threads`` the process (started as root) first drops to a uid no one
else uses. Everything it needs is imported, and one connection served, before
that (root's files may not be readable after). End of input shuts the server
down and exits 0. Logs go to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import sys
import threading
import time

import threadws


def echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


def tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def wait_for_tasks(count: int) -> None:
    # A thread that has ended in Python leaves the kernel's count a moment
    # later; the limit must be set against the settled count.
    deadline = time.monotonic() + 10
    while tasks() != count:
        if time.monotonic() > deadline:
            raise SystemExit(f"threads didn't settle at {count}: {tasks()}")
        threading.Event().wait(0.01)


def drop_root() -> None:
    uid = 2_000_000_000 + os.getpid() % 1_000_000  # from the pid: two runs at once don't share one
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    threadws.reuse_threads(0)  # every connection thread a new one, as the limits below count them
    server = threadws.serve(echo, "127.0.0.1", 0, ping_interval=None, close_timeout=2.0)
    serving = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    serving.start()
    port = server.server_address[1]
    base = tasks()  # this thread and the accept loop
    with threadws.dial(f"ws://127.0.0.1:{port}/", ping_interval=None) as conn:  # every lazy import, done
        conn.send("warm-up")
        conn.recv(timeout=10)
    wait_for_tasks(base)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    dropped = False
    for line in sys.stdin:
        words = line.split()
        if words == ["port"]:
            reply = str(port)
        elif words[:1] == ["threads"]:
            if not dropped:
                drop_root()
                dropped = True
            wait_for_tasks(base)
            resource.setrlimit(resource.RLIMIT_NPROC, (base + int(words[1]), nproc[1]))
            reply = "ok"
        elif words[:1] == ["files"]:
            in_use = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir had open
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + int(words[1]), nofile[1]))
            reply = "ok"
        elif words == ["unlimit"]:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc[1], nproc[1]) if dropped else nproc)
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
            reply = "ok"
        elif words == ["stats"]:
            reply = json.dumps(dataclasses.asdict(server.stats()))
        else:
            reply = f"unknown command {line!r}"
        print(reply, flush=True)
    server.shutdown(timeout=5)
    serving.join(5)


if __name__ == "__main__":
    main()
