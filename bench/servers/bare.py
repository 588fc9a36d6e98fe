"""The ceiling: a thread-per-connection echo with only the framing it can't do without.

One thread per connection, blocking sockets, no library. It answers the opening
handshake, unmasks frames and echoes each data frame back unmasked; ping gets a
pong, close gets its echo and the socket closes. There is no validation of any
kind (no UTF-8 check, no limits, no fragmentation rules): it shows what a
threaded Python design costs at the very least, not a server to use.
"""

import argparse
import base64
import hashlib
import socket
import struct
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--stack-size", type=int, default=0, help="thread stack size in KiB (0: the default)")
args = parser.parse_args()
if args.stack_size:
    threading.stack_size(args.stack_size * 1024)


_XOR = [bytes(i ^ k for i in range(256)) for k in range(256)]


def unmask(mask, data):
    n = len(data)
    if n <= 4096:  # one big-int XOR is quickest for small payloads
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
    out = bytearray(data)  # large ones: four strided byte translations
    for i in range(4):
        out[i::4] = data[i::4].translate(_XOR[mask[i]])
    return out


def header(opcode, n):
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def handle(sock):
    with sock:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        buf = bytearray(buf)
        while True:
            out = []
            pos = 0
            # Parse every whole frame in the buffer, then answer them in one sendall.
            while True:
                if len(buf) - pos < 2:
                    break
                b0, b1 = buf[pos], buf[pos + 1]
                n = b1 & 0x7F
                hlen = 2
                if n == 126:
                    if len(buf) - pos < 4:
                        break
                    n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                    hlen = 4
                elif n == 127:
                    if len(buf) - pos < 10:
                        break
                    n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    hlen = 10
                if len(buf) - pos < hlen + 4 + n:
                    break
                mask = bytes(buf[pos + hlen:pos + hlen + 4])
                start = pos + hlen + 4
                data = unmask(mask, bytes(buf[start:start + n]))
                pos = start + n
                opcode = b0 & 0x0F
                if opcode == 0x8:  # close: echo it and hang up
                    out.append(header(0x8, len(data)) + data)
                    sock.sendall(b"".join(out))
                    return
                if opcode == 0x9:
                    opcode = 0xA
                elif opcode == 0xA:
                    continue
                out.append(header(opcode, len(data)))
                out.append(data)
            if pos:
                del buf[:pos]
            if out:
                sock.sendall(b"".join(out))
            want = 262144
            chunk = sock.recv(want)
            if not chunk:
                return
            buf += chunk


listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
print("READY", listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
