"""Test helpers for wss: certificates from trustme, and a TCP proxy that records every byte.

The proxy sits between a client and a server and keeps both directions of every
connection it carries, so a test can check that what crossed the wire was TLS
records and nothing else (:func:`tls_record_errors`): a byte of plaintext would
break the record framing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import threading
from dataclasses import dataclass, field

import trustme

#: TLS record content types (RFC 8446 section 5.1): change_cipher_spec,
#: alert, handshake, application_data.
_RECORD_TYPES = {20, 21, 22, 23}
#: The longest record payload a peer may send (2^14 + 256 for TLS 1.3's
#: ciphertext expansion; TLS 1.2 allows 2^14 + 2048).
_MAX_RECORD = (1 << 14) + 2048


@dataclass
class Certificates:
    ca: trustme.CA
    server: ssl.SSLContext
    client: ssl.SSLContext
    cert_pem: str  # the server's certificate chain and key, one PEM file (for other peers)
    key_pem: str
    ca_pem: str


def make_certificates(tmp_dir: str) -> Certificates:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    cert_pem = f"{tmp_dir}/cert.pem"
    key_pem = f"{tmp_dir}/key.pem"
    ca_pem = f"{tmp_dir}/ca.pem"
    cert.cert_chain_pems[0].write_to_path(cert_pem)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(cert_pem, append=True)
    cert.private_key_pem.write_to_path(key_pem)
    ca.cert_pem.write_to_path(ca_pem)
    return Certificates(ca, server, client, cert_pem, key_pem, ca_pem)


def tls_record_errors(stream: bytes) -> str | None:
    """Why *stream* is not a sequence of TLS records, or None if it is.

    The last record may be cut short (the connection was torn down mid-record).
    """
    i = 0
    n = len(stream)
    while i + 5 <= n:
        kind, major, minor = stream[i], stream[i + 1], stream[i + 2]
        length = int.from_bytes(stream[i + 3 : i + 5], "big")
        if kind not in _RECORD_TYPES or major != 3 or minor > 4 or length > _MAX_RECORD:
            return f"not a TLS record at byte {i} of {n}: {stream[i : i + 24]!r}"
        i += 5 + length
    return None


@dataclass
class Capture:
    """The bytes of one proxied connection, each direction in order."""

    upstream: bytearray = field(default_factory=bytearray)  # client -> server
    downstream: bytearray = field(default_factory=bytearray)  # server -> client


class RecordingProxy:
    """Forwards TCP connections from its own port to *target*, recording both directions."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.captures: list[Capture] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="test-proxy-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            capture = Capture()
            with self._lock:
                self.captures.append(capture)
                self._sockets += [client, server]
                for src, dst, buf in ((client, server, capture.upstream), (server, client, capture.downstream)):
                    thread = threading.Thread(target=_pump, args=(src, dst, buf), name="test-proxy-pump", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def close(self) -> None:
        """Stop: no new connections, and every pump ends (call it once both ends are closed)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            threads, sockets = list(self._threads), list(self._sockets)
        # A pump may still be pushing what a closed endpoint left in flight into
        # an orphaned socket with a zero window (the kernel keeps it up to a
        # minute): shutting our own sockets down ends that at once.
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(10)
        for sock in sockets:
            sock.close()
        assert not any(t.is_alive() for t in threads + [self._acceptor])


def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
    """Copy src to dst until EOF or an error, keeping everything; pass an EOF on as one."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            record += data
            dst.sendall(data)
    except OSError:
        pass
    for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass


def spki_sha256(cert_pem: str) -> str:
    """Base64 SHA-256 of the public key (SubjectPublicKeyInfo) of the first certificate in *cert_pem*.

    What Chromium's ``--ignore-certificate-errors-spki-list`` takes: that one
    key is accepted, every other certificate error still counts.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    with open(cert_pem, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
