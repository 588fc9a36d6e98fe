"""python examples/command/server.py --port 8080 -- sh -c 'echo "type a line"; exec cat'

Runs a command for each browser that connects and wires it to the page: what
the command writes to stdout and stderr appears on the page as it comes, and
each line typed on the page goes to the command's stdin. The command ends
when the connection does (the page is closed or reloaded: stdin is closed,
then SIGTERM, then SIGKILL), and the connection ends when the command does.

Everything after ``--`` is the command and its arguments, run without a shell
(give ``sh -c '...'`` yourself, as above, if you want one). Only pages this
server served itself may connect (the default origin check), so another site
open in the same browser can't drive your command.
"""

from __future__ import annotations

import argparse
import codecs
import os
import pathlib
import signal
import subprocess
import sys
import threading

import threadws

STATIC = pathlib.Path(__file__).with_name("static")
# How long a command gets to exit by itself after its stdin closes, then after SIGTERM.
GRACE = 1.0


def stream_output(conn: threadws.Conn, proc: subprocess.Popen[bytes]) -> None:
    """Send what the command writes, as text messages, as soon as it writes it; close when it exits."""
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # never split a character
    try:
        while chunk := os.read(proc.stdout.fileno(), 64 * 1024):
            text = decoder.decode(chunk)
            if text:
                conn.send(text)
        status = proc.wait()
        conn.close(threadws.CloseCode.NORMAL_CLOSURE, f"command exited with status {status}")
    except threadws.ConnectionClosed:
        pass  # the page went away first; run_command ends the process


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Close stdin, then ask the command to stop, then make it."""
    assert proc.stdin is not None
    try:
        proc.stdin.close()
    except OSError:
        pass  # it exited with input unread
    for stop in (None, proc.terminate, proc.kill):
        if stop is not None:
            stop()
        try:
            proc.wait(GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def make_handler(command: list[str]):  # type: ignore[no-untyped-def]
    def run_command(conn: threadws.Conn) -> None:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            reason = f"cannot start the command: {exc}".encode()[:123].decode("utf-8", "ignore")  # RFC 6455 5.5
            conn.close(threadws.CloseCode.INTERNAL_ERROR, reason)
            return
        print(f"started {command[0]} (pid {proc.pid}) for {conn.remote_address[0]}", file=sys.stderr, flush=True)
        output = threading.Thread(target=stream_output, args=(conn, proc), name=f"{conn.name}-output", daemon=True)
        output.start()
        assert proc.stdin is not None
        try:
            for message in conn:  # each line the page sends
                line = message if isinstance(message, bytes) else message.encode()
                proc.stdin.write(line + b"\n")
                proc.stdin.flush()
        except (BrokenPipeError, threadws.ConnectionClosed):
            pass  # the command stopped reading, or the connection failed
        finally:
            end_process(proc)
            output.join()
            conn.close()
            print(f"pid {proc.pid} ended with status {proc.returncode}", file=sys.stderr, flush=True)

    return run_command


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a command and wire it to a page over a WebSocket.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- sh -c 'exec cat'")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Ctrl-C and SIGTERM both stop it

    # The default Upgrader lets in only pages this server served (same origin).
    with threadws.serve(make_handler(command), args.host, args.port, path="/ws", static_dir=STATIC) as server:
        host, port = server.server_address
        print(f"Open http://{host}:{port}/ in a browser (Ctrl-C stops the server)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
