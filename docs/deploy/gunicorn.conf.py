"""gunicorn settings for an app that serves WebSockets (docs/howto/gunicorn.md).

    gunicorn --config gunicorn.conf.py app:app

A stopping worker (SIGTERM: ``systemctl stop``, ``docker stop``, Kubernetes)
closes its WebSockets with 1001 "going away" and exits within
``graceful_timeout``. Left to itself, a gthread worker would wait that long
for the requests that hold WebSockets and then be killed, and a sync worker
would exit at once, taking the threads that serve its WebSockets along; either
way clients would see the connection drop (1006) instead of a close frame.
tests/test_deploy_gunicorn.py runs this very file.
"""

import signal
import threading
import time

import threadws

bind = "127.0.0.1:8000"
worker_class = "gthread"
workers = 2
# Per worker: each WebSocket served on its request's thread holds one of these
# until it ends (and has a reader and a writer thread of its own besides), so
# allow for the WebSockets you expect open at once plus the ordinary requests.
threads = 100
# Seconds a stopping worker has to close its WebSockets and finish its requests
# before the arbiter kills it. Keep systemd's TimeoutStopSec above it.
graceful_timeout = 10

GOING_AWAY = threadws.CloseCode.GOING_AWAY.to_bytes(2, "big") + b"server shutting down"


def post_worker_init(worker):
    """Chain onto the worker's SIGTERM handler: also close its WebSockets with 1001."""
    from app import open_websockets  # the app's registry of open connections

    # gunicorn's own handler: stop accepting, finish the running requests.
    stop_worker = signal.getsignal(signal.SIGTERM)
    # The closing handshakes' budget, leaving a second for gunicorn's own cleanup.
    budget = max(1.0, worker.cfg.graceful_timeout - 1.0)

    def on_sigterm(signum, frame):
        stop_worker(signum, frame)
        # Closing handshakes wait for peers, which a signal handler must not do.
        # Not a daemon thread: the worker's exit waits for it.
        closer = threading.Thread(target=close_all, args=(open_websockets, budget))
        closer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def close_all(registry, timeout):
    """Close the connections in *registry* (a Hub) with 1001; abort any left after *timeout*."""
    deadline = time.monotonic() + timeout
    # Again while any is left: a request may have been upgrading when the signal came.
    while registry.connections and time.monotonic() < deadline:
        conns = registry.connections
        for conn in conns:
            try:
                # Queues the close frame after what is already queued; doesn't wait.
                conn.write_control(threadws.MessageType.CLOSE, GOING_AWAY)
            except threadws.ConnectionClosed:
                pass  # already closing
        for conn in conns:  # all the closing handshakes run at once
            conn.wait_closed(max(0.0, deadline - time.monotonic()))
    for conn in registry.connections:
        conn.abort()
