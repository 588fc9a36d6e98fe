"""The ceiling: the fastest thread-per-connection WebSocket echo we could write in Python.

    python bench/servers/bare.py --port 8765 [--no-speedups] [tuning options]

One OS thread per connection, blocking sockets, no library. It answers the
opening handshake (computing Sec-WebSocket-Accept), unmasks every frame and
echoes each data frame back, frame by frame; a ping gets a pong, a close gets
its echo and then the socket closes. Nothing is validated (no UTF-8 check, no
limits, no fragmentation or reserved-bit rules): it is what a threaded Python
design costs at the very least, a yardstick, not a server to use.

How it was tuned, with the measurements: bench/README.md, "The ceiling". The
defaults are the fastest variant on every scenario; the options below select
the other candidates for bench/tune_ceiling.py and change nothing else:

* each connection reads with ``recv_into`` into one preallocated bytearray
  that starts at 4 KiB (the request head must fit) and doubles (up to 256 KiB)
  whenever a read fills it, or grows at once to hold a frame too big for it
  (``--read recv`` reads with ``recv(size)`` and copies into the same buffer;
  ``--buffer``, ``--max-buffer``);
* frames are unmasked in place (RFC 6455 section 5.3) with threadws's own C
  masking, ``threadws._speedups.mask_into``, so that the ceiling and threadws
  pay the same for the one byte loop; in pure Python (the same technique as
  threadws's fallback) where threadws does too: when the extension wasn't
  built, with THREADWS_NO_SPEEDUPS=1 or with ``--no-speedups``;
* each reply is written over its request in the same buffer (a server's
  header is 4 bytes shorter than the client's masked one): the first of a
  read's replies without moving its payload, and all of them go out together
  in one ``sendall`` (``--send send`` loops on ``send``);
* TCP_NODELAY is set on the listener, which Linux copies to every accepted
  socket (``--nodelay none|socket``);
* threads are started with ``_thread.start_new_thread`` (``--threads
  threading``: a ``threading.Thread`` per connection).
"""

import argparse
import binascii
import hashlib
import os
import socket
import struct
import threading
import _thread

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
KEY_HEADER = b"\r\nsec-websocket-key:"
CLOSE = 0x8
PING = 0x9
PONG = 0xA

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--stack-size", type=int, default=0, help="thread stack size in KiB (0: the default)")
parser.add_argument("--no-speedups", action="store_true", help="unmask in pure Python, not threadws's C")
parser.add_argument("--read", choices=["recv_into", "recv"], default="recv_into")
parser.add_argument("--buffer", type=int, default=4, help="initial receive buffer, KiB")
parser.add_argument("--max-buffer", type=int, default=256, help="a full read doubles the buffer up to this, KiB")
parser.add_argument("--send", choices=["sendall", "send"], default="sendall")
parser.add_argument("--nodelay", choices=["listener", "socket", "none"], default="listener")
parser.add_argument("--threads", choices=["thread", "threading"], default="thread")
args = parser.parse_args()
if args.stack_size:
    threading.stack_size(args.stack_size * 1024)
BUFFER = args.buffer * 1024
MAX_BUFFER = max(BUFFER, args.max_buffer * 1024)

_XOR: list[bytes] = []


def py_mask_into(buf, start, stop, key):
    """XOR buf[start:stop] in place with the 4-byte key: threadws's pure-Python technique."""
    n = stop - start
    if n <= 512:  # one big-integer XOR is the quickest for short payloads
        keys = int.from_bytes((bytes(key) * ((n >> 2) + 1))[:n], "little")
        buf[start:stop] = (int.from_bytes(buf[start:stop], "little") ^ keys).to_bytes(n, "little")
        return
    if not _XOR:
        _XOR.extend(bytes(a ^ b for a in range(256)) for b in range(256))
    for i in range(4):  # longer ones: four strided byte translations
        buf[start + i:stop:4] = buf[start + i:stop:4].translate(_XOR[key[i]])


mask_into = py_mask_into
if not args.no_speedups and os.environ.get("THREADWS_NO_SPEEDUPS", "") in ("", "0"):
    try:
        from threadws._speedups import mask_into  # the C masking threadws uses, where it was built
    except ImportError:
        pass  # threadws masks in pure Python here too


def recv_reader(sock):
    """--read recv: recv(size) returns a new bytes object each time, copied into the buffer."""
    recv = sock.recv

    def read(target):
        chunk = recv(len(target))
        n = len(chunk)
        target[:n] = chunk
        return n

    return read


def send_writer(sock):
    """--send send: send() may take only part, so loop on the rest."""
    send = sock.send

    def write(data):
        sent = send(data)
        while sent < len(data):
            data = data[sent:]
            sent = send(data)

    return write


def handshake(sock, buf, view, read):
    """Answer the opening handshake; the bytes after the request head end up at buf[0:], their count returned.

    -1 when the peer went away or sent no Sec-WebSocket-Key in a head that fits the buffer.
    """
    have = 0
    while True:
        n = read(view[have:])
        if not n:
            return -1
        have += n
        end = buf.find(b"\r\n\r\n", 0, have)
        if end >= 0:
            break
        if have == len(buf):
            return -1
    head = bytes(view[:end])
    at = head.lower().find(KEY_HEADER)  # header names are case-insensitive, the key's value isn't
    if at < 0:
        return -1
    at += len(KEY_HEADER)
    stop = head.find(b"\r\n", at)
    key = head[at:stop if stop >= 0 else len(head)].strip()
    accept = binascii.b2a_base64(hashlib.sha1(key + GUID).digest(), newline=False)
    sock.sendall(HEAD + accept + b"\r\n\r\n")
    rest = have - end - 4
    view[:rest] = view[end + 4:have]
    return rest


def connection(sock):
    """A connection's whole life, on its own thread."""
    try:
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        read = sock.recv_into if args.read == "recv_into" else recv_reader(sock)
        write = sock.sendall if args.send == "sendall" else send_writer(sock)
        have = handshake(sock, buf, view, read)
        if have >= 0:
            echo(buf, view, have, read, write)
    except OSError:
        pass  # the peer reset the connection: nothing to do but close it
    finally:
        sock.close()


def echo(buf, view, have, read, write):
    """Echo frames until a close frame or EOF. buf[0:have] holds bytes already read."""
    pack_into = struct.pack_into
    filled = False
    while True:
        pos = 0  # the next frame to parse
        first = out = -1  # the replies so far fill buf[first:out]; out <= pos always
        closing = False
        while have - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            if n < 126:
                hl = 2
            elif n == 126:
                if have - pos < 4:
                    break
                n = buf[pos + 2] << 8 | buf[pos + 3]
                hl = 4
            else:
                if have - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hl = 10
            start = pos + hl + 4  # after the header and the masking key
            stop = start + n
            if stop > have:
                break
            pos = stop
            opcode = b0 & 0x0F
            if opcode == PONG:
                continue
            if opcode == PING:
                b0 ^= PING ^ PONG
            mask_into(buf, start, stop, view[start - 4:start])
            # The reply's header is the request's without the mask bit and key. The first reply's goes just
            # before its payload (over the key); later ones at out, their payloads moved up after them.
            if first < 0:
                first = at = start - hl
            else:
                at = out
                view[at + hl:at + hl + n] = view[start:stop]
            buf[at] = b0
            if hl == 2:
                buf[at + 1] = n
            elif hl == 4:
                pack_into("!BH", buf, at + 1, 126, n)
            else:
                pack_into("!BQ", buf, at + 1, 127, n)
            out = at + hl + n
            if opcode == CLOSE:
                closing = True
                break
        if first >= 0:
            write(view[first:out])
        if closing:
            return
        # Keep the partial frame, at the front.
        have -= pos
        if pos and have:
            view[:have] = view[pos:pos + have]
        # Grow the buffer when the partial frame can't fit, or (up to MAX_BUFFER) when the last read filled it.
        size = len(buf)
        need = frame_size(buf, have)
        if need > size or (filled and size < MAX_BUFFER):
            size *= 2
            while size < need:
                size *= 2
            bigger = bytearray(size)
            bigger[:have] = view[:have]
            buf, view = bigger, memoryview(bigger)
        free = view[have:]
        n = read(free)
        if not n:
            return
        filled = n == len(free)
        have += n


def frame_size(buf, have):
    """The whole size of the frame starting buf[0:have], or 0 if its header isn't complete yet."""
    if have < 2:
        return 0
    n = buf[1] & 0x7F
    if n < 126:
        return 6 + n
    if n == 126:
        return 8 + (buf[2] << 8 | buf[3]) if have >= 4 else 0
    return 14 + int.from_bytes(buf[2:10], "big") if have >= 10 else 0


listener = socket.create_server(("127.0.0.1", args.port), backlog=socket.SOMAXCONN)
if args.nodelay == "listener":
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Linux: every accepted socket inherits it
print("READY", listener.getsockname()[1], flush=True)
per_socket = args.nodelay == "socket"
while True:
    conn, _ = listener.accept()
    if per_socket:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.threads == "thread":
        _thread.start_new_thread(connection, (conn,))
    else:
        threading.Thread(target=connection, args=(conn,), daemon=True).start()
