"""python examples/filewatch/server.py --port 8080 notes.txt

Shows a text file in the browser and keeps it current: whenever the file
changes, the server pushes its new content to every page that shows it.

The server checks the file's size and modification time every ``--interval``
seconds (0.2 by default) on each connection's own thread, waiting on the
connection in between, so a page that goes away ends its thread at once.
Only pages this server served itself may connect (the default origin check).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal

import threadws

STATIC = pathlib.Path(__file__).with_name("static")
MAX_SIZE = 1 << 20  # show at most the first MiB


def read_file(path: pathlib.Path) -> tuple[tuple[int, int] | None, str]:
    """The file's (mtime_ns, size) and its text; (None, a note) if it can't be read."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read(MAX_SIZE)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    return (stat.st_mtime_ns, stat.st_size), data.decode("utf-8", errors="replace")


def make_handler(path: pathlib.Path, interval: float):  # type: ignore[no-untyped-def]
    def watch(conn: threadws.Conn) -> None:
        version, text = read_file(path)
        conn.send(text)
        while True:
            try:
                conn.recv(timeout=interval)  # the page sends nothing; this waits, and notices a close
                continue
            except TimeoutError:
                pass
            new_version, new_text = read_file(path)
            # Compare the content too: a write within the clock's resolution keeps mtime and size.
            if new_version != version or new_text != text:
                version, text = new_version, new_text
                conn.send(text)

    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description="Show a file in the browser and push every change to it.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between checks (default: %(default)s)")
    parser.add_argument("file", type=pathlib.Path, help="the file to watch")
    args = parser.parse_args()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Ctrl-C and SIGTERM both stop it

    handler = make_handler(args.file.resolve(), args.interval)
    with threadws.serve(handler, args.host, args.port, path="/ws", static_dir=STATIC) as server:
        host, port = server.server_address
        print(f"Open http://{host}:{port}/ in a browser to watch {args.file} (Ctrl-C stops the server)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
