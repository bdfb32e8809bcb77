"""A TCP proxy on 127.0.0.1 that loses connections on purpose, between a store and its real server.

:class:`FaultProxy` relays bytes between its clients and one server (PostgreSQL,
moto's HTTP server) in threads of its own, so it works under any event loop
of the tests. Faults are *armed* in order, each for the next request whose
bytes contain a marker (a stream name or a value only one batch carries, an
HTTP header, ``COMMIT``):

* ``"before"`` — the request is not forwarded (or only the part of it that
  passed before the marker did, which the server discards): the client's
  connection and the server's are closed. Nothing the request asked for
  happens.
* ``"after"`` — the request is forwarded, the proxy waits until the server has
  answered it in full (``reply_done``: PostgreSQL's ``ReadyForQuery``, the
  end of an HTTP response's headers; by then a PostgreSQL statement outside
  a transaction, or a DynamoDB transaction, has committed), and then closes
  both connections without relaying the answer: the client cannot know.

:meth:`FaultProxy.refuse` makes it close new connections at once (a server
that is down) until :meth:`FaultProxy.accept`. :attr:`FaultProxy.fired`
records the faults that happened, so a test can check that they did.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

Mode = str  # "before" or "after"


def postgres_reply_done(reply: bytes) -> bool:
    """Whether a PostgreSQL server's reply holds ``ReadyForQuery`` (sent after the statement's commit)."""
    return b"Z\x00\x00\x00\x05" in reply


def http_reply_done(reply: bytes) -> bool:
    """Whether an HTTP server has answered (its response's headers are in; it acted before sending them)."""
    return b"\r\n\r\n" in reply


@dataclass
class Armed:
    mode: Mode
    marker: bytes
    then_refuse: bool = False


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.lock = threading.Lock()
        self.holding: Armed | None = None  # an "after" fault waiting for the server's reply
        self.held = b""
        self.closed = False

    def start(self) -> None:
        for target in (self._upstream, self._downstream):
            threading.Thread(target=target, daemon=True, name="fault-proxy-link").start()

    def kill(self) -> bool:
        """Forward nothing more (sends happen under the lock); whether it was alive."""
        with self.lock:
            alive, self.closed = not self.closed, True
        return alive

    def close(self) -> None:
        self.kill()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.proxy._forget(self)

    def _upstream(self) -> None:
        """Client to server, looking for the armed markers (across chunk boundaries)."""
        tail = b""  # the end of the bytes before, too short to hold a whole marker
        try:
            while data := self.client.recv(65536):
                fault = self.proxy._match(tail + data)
                keep = self.proxy._longest_marker - 1
                tail = b"" if fault is not None or keep == 0 else (tail + data)[-keep:]
                if fault is not None and fault.mode == "before":
                    self.proxy._fire(fault)
                    break
                with self.lock:
                    if self.closed:
                        break
                    if fault is not None:
                        self.holding = fault
                    self.server.sendall(data)
        except OSError:
            pass
        self.close()

    def _downstream(self) -> None:
        """Server to client; under an "after" fault, the reply is kept back and the link cut once it is in."""
        try:
            while data := self.server.recv(65536):
                with self.lock:
                    if self.closed:
                        break
                    fault = self.holding
                    if fault is None:
                        self.client.sendall(data)
                        continue
                self.held += data
                if self.proxy.reply_done(self.held):
                    self.proxy._fire(fault)
                    break
        except OSError:
            pass
        self.close()


class FaultProxy:
    """A proxy from ``127.0.0.1:port`` (a free port) to ``target``, started at once; ``close()`` stops it.

    ``reply_done(bytes)`` says when the server has answered a request in full
    (see :func:`postgres_reply_done`, :func:`http_reply_done`).
    """

    def __init__(self, target: tuple[str, int], reply_done: Callable[[bytes], bool]) -> None:
        self.target = target
        self.reply_done = reply_done
        self.fired: list[Armed] = []
        """The faults that happened, in order."""
        self.refused = 0
        """How many connections were closed at once while refusing."""
        self.accepted = 0
        self._armed: list[Armed] = []
        self._longest_marker = 1
        self._refusing = False
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # and where shutdown does not wake it, the loop sees _stopping
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fault-proxy")
        self._thread.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def arm(self, mode: Mode, marker: bytes, times: int = 1, then_refuse: bool = False) -> None:
        """Lose the next ``times`` requests holding ``marker``, ``mode`` ("before" or "after") the server;
        with ``then_refuse``, :meth:`refuse` as each fault happens (the server stays away)."""
        if mode not in ("before", "after"):
            raise ValueError(mode)
        with self._lock:
            self._armed.extend(Armed(mode, marker, then_refuse) for _ in range(times))
            self._longest_marker = max(self._longest_marker, *(len(a.marker) for a in self._armed))

    @property
    def armed(self) -> int:
        """How many armed faults have not happened yet."""
        with self._lock:
            return len(self._armed)

    def refuse(self) -> None:
        """Close every live connection, and each new one as soon as it is made, until :meth:`accept`."""
        with self._lock:
            self._refusing = True
            links = list(self._links)
        for link in links:  # all dead first: a client that sees one go cannot get through another
            link.kill()
        for link in links:
            link.close()

    def accept(self) -> None:
        """Relay new connections again."""
        with self._lock:
            self._refusing = False

    def drop_all(self) -> None:
        """Close every live connection (between requests: as a server restart does)."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.kill()
        for link in links:
            link.close()

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()
        self._thread.join(timeout=5)

    def _match(self, data: bytes) -> Armed | None:
        with self._lock:
            for k, fault in enumerate(self._armed):
                if fault.marker in data:
                    return self._armed.pop(k)
        return None

    def _fire(self, fault: Armed) -> None:
        with self._lock:
            self.fired.append(fault)
        if fault.then_refuse:
            self.refuse()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _serve(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            with self._lock:
                refusing = self._refusing
            if refusing:
                self.refused += 1
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:  # checked again with the link added at once: refuse() closes it or sees it
                refusing = self._refusing
                if not refusing:
                    self._links.add(link)
                    self.accepted += 1
            if refusing:
                self.refused += 1
                link.close()
                continue
            link.start()
