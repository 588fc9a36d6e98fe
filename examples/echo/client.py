"""python examples/echo/client.py ws://127.0.0.1:8080/echo

Sends each line read from stdin to an echo server and prints what comes back.
With ``--count N`` it sends N numbered messages instead, checks that every one
comes back unchanged, and exits 0 only if they all do.
"""

from __future__ import annotations

import argparse
import sys

import threadws

TIMEOUT = 10.0  # seconds to wait for each echo


def echo_lines(conn: threadws.Conn) -> int:
    for line in sys.stdin:
        conn.send(line.rstrip("\n"))
        print(conn.recv(timeout=TIMEOUT), flush=True)
    return 0


def echo_count(conn: threadws.Conn, count: int) -> int:
    for i in range(1, count + 1):
        message = f"message {i} of {count}"
        conn.send(message)
        echo = conn.recv(timeout=TIMEOUT)
        if echo != message:
            print(f"sent {message!r} but got {echo!r} back", file=sys.stderr)
            return 1
        print(echo, flush=True)
    print(f"all {count} messages came back", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Talk to a WebSocket echo server.")
    parser.add_argument("url", help="the echo endpoint, e.g. ws://127.0.0.1:8080/echo")
    parser.add_argument("--count", type=int, metavar="N", help="send N numbered messages instead of stdin's lines")
    args = parser.parse_args()

    try:
        conn = threadws.dial(args.url)
    except (threadws.HandshakeError, OSError, ValueError) as exc:
        print(f"cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    with conn:  # leaving the block closes with 1000 and waits for the server's answer
        try:
            return echo_count(conn, args.count) if args.count is not None else echo_lines(conn)
        except TimeoutError:
            print(f"no echo within {TIMEOUT} s", file=sys.stderr)
        except threadws.ConnectionClosed as exc:
            print(f"connection closed: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
