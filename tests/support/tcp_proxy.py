"""A TCP proxy a test can cut: between the services and a broker node, or the services and PostgreSQL.

It runs its own event loop in a thread, so a busy or blocked test never slows the traffic it relays, and
it only ever listens on and connects to 127.0.0.1.

    proxy = TcpProxy(target_port=5432).start()    # services connect to 127.0.0.1:proxy.port
    proxy.cut()          # every open connection is reset (RST), new ones are reset at once
    proxy.restore()
    proxy.partition()    # nothing flows either way, connections stay open (a silent network): only
                         # heartbeats and timeouts notice; restore() lets the held bytes through
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from enum import Enum

HOST = "127.0.0.1"
CHUNK = 64 * 1024


class ProxyState(Enum):
    OPEN = "open"
    CUT = "cut"  # reset everything
    PARTITIONED = "partitioned"  # hold everything


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST, as a cut cable or a dead host does, not with a polite FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_port: int, *, name: str = "") -> None:
        self.name = name or f"proxy->{target_port}"
        self.target_port = target_port
        self.port = 0
        self.state = ProxyState.OPEN
        self.bytes_held_up = 0  # client bytes a partition is holding back from the target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._pairs: set[_Pair] = set()
        self._flowing: asyncio.Event | None = None

    # -- control, from any thread --------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self) -> None:
        self._call(self._set(ProxyState.CUT))

    def partition(self) -> None:
        self._call(self._set(ProxyState.PARTITIONED))

    def restore(self) -> None:
        self._call(self._set(ProxyState.OPEN))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def _call(self, coro: object, timeout: float = 10) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    # -- inside the proxy's loop -----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, HOST, 0, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set(self, state: ProxyState) -> None:
        assert self._flowing is not None
        self.state = state
        if state is ProxyState.OPEN:
            self._flowing.set()
            return
        self._flowing.clear()
        if state is ProxyState.CUT:
            for pair in list(self._pairs):
                self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        if pair not in self._pairs:
            return
        self._pairs.discard(pair)
        _reset(pair.client)
        _reset(pair.upstream)
        for task in pair.tasks:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self.state is ProxyState.CUT:
            _reset(writer)
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            await self._flowing.wait()  # a partition holds new connections too
            if pair not in self._pairs:
                return
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.target_port), 5)
        except (OSError, TimeoutError):
            self._drop(pair)  # the target is down: the client sees its connection reset
            return
        except asyncio.CancelledError:
            self._drop(pair)
            raise
        if pair not in self._pairs:
            _reset(up_writer)
            return
        pair.upstream = up_writer
        pair.tasks = [
            asyncio.create_task(self._pump(pair, reader, up_writer, up=True)),
            asyncio.create_task(self._pump(pair, up_reader, writer, up=False)),
        ]

    async def _pump(self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                # Holding the chunk (and reading no more) is what a silent network looks like to both ends.
                if up and not self._flowing.is_set():
                    self.bytes_held_up += len(data)
                await self._flowing.wait()
                if pair not in self._pairs:
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One side closed: close the other (politely) and forget the pair.
        if pair in self._pairs:
            self._pairs.discard(pair)
            for other in (pair.client, pair.upstream):
                if other is not None:
                    with contextlib.suppress(Exception):
                        other.close()
            for task in pair.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            self._drop(pair)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
