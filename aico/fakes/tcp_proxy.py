"""A TCP proxy on 127.0.0.1 that can turn the connections through it into half-open ones.

    with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        proxy.blackhole()

Each accepted connection is forwarded to the upstream by two threads, one per direction.
`blackhole()` simulates a NAT or firewall that silently drops the state of the connections open
at that moment: from then on their bytes are read and thrown away, in both directions, and no FIN
or RST is ever sent to either peer, so each side sees a connection that is open and writable but
silent, and only a liveness check (AMQP heartbeats, TCP keepalive) can tell it is dead. A peer
that gives up and closes its end gets its close, but the other side is not told. Connections made
after the call are forwarded normally. Bytes being forwarded at the moment of the call may still
arrive.
"""

from __future__ import annotations

import contextlib
import socket
import threading

_CHUNK = 65536
_ACCEPT_POLL = 0.05  # seconds; how quickly `stop()` ends the accept loop


class _Link:
    """One forwarded connection: the accepted client socket and its upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.blackholed = False
        self.pumps_left = 2

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv on it
            sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`; see the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0  # connections accepted since start

    @property
    def connections(self) -> int:
        """Forwarded connections open now (a black-holed one counts until both peers close)."""
        with self._lock:
            return len(self._links)

    def start(self) -> TcpProxy:
        self._spawn(self._accept_loop, "accept")
        return self

    def blackhole(self) -> None:
        """Stop forwarding on every connection open now, silently; new ones are not affected."""
        with self._lock:
            for link in self._links:
                link.blackholed = True

    def stop(self) -> None:
        """Stop accepting and close every connection (this one does send FIN)."""
        self._stopping.set()
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.close()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- threads ----------------------------------------------------------------------------

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"tcp-proxy-{name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()  # as if the upstream refused: the client sees its connection end
                continue
            upstream.settimeout(None)
            link = _Link(client, upstream)
            with self._lock:
                if self._stopping.is_set():
                    link.close()
                    return
                self._links.add(link)
            self._spawn(self._pump, "up", link, client, upstream)
            self._spawn(self._pump, "down", link, upstream, client)

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        """Copy `source` to `target` until `source` ends; black-holed, read and drop instead."""
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                break
            if link.blackholed:
                continue
            try:
                target.sendall(data)
            except OSError:
                break
        self._pump_done(link, source)

    def _pump_done(self, link: _Link, source: socket.socket) -> None:
        with self._lock:
            link.pumps_left -= 1
            finished = link.pumps_left == 0
            if finished:
                self._links.discard(link)
        if finished:
            link.close()
        elif link.blackholed:
            source.close()  # that peer closed; the other one must not hear of it
        else:
            link.close()  # an ordinary close: pass it on, which also ends the other pump
