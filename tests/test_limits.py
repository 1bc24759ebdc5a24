"""Resource limits at the edge: slowloris, the HTTP parser, and connection floods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import http_parser, web
from caseline.crypto.keys import SigningKey
from caseline.server.app import create_app, make_runner
from caseline.server.config import ServerConfig


def test_aiohttp_is_recent_and_uses_its_c_parser() -> None:
    version = tuple(int(p) for p in aiohttp.__version__.split(".")[:3])
    assert version >= (3, 14, 5)
    assert http_parser.HttpRequestParser is http_parser.HttpRequestParserC


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    config = ServerConfig(data_dir=tmp_path, header_timeout=1.0)
    app = create_app(config, server_key=SigningKey(bytes(32)))
    runner = make_runner(app, config)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield "127.0.0.1", port
    await runner.cleanup()


async def test_slowloris_connections_are_closed_and_others_are_served(
    site: tuple[str, int],
) -> None:
    host, port = site
    stalled = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        stalled.append((reader, writer))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/healthz") as r,
    ):
        assert r.status == 200
    # Each stalled connection is closed by the broker: reading hits EOF.
    closed = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in stalled)), timeout=15)
    assert all(data == b"" or b"408" in data or b"400" in data for data in closed)
    for _, writer in stalled:
        writer.close()


async def test_connection_that_sends_nothing_is_closed(site: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*site)
    assert await asyncio.wait_for(reader.read(), timeout=15) == b""
    writer.close()


async def test_unknown_route_and_method_are_problems(site: tuple[str, int]) -> None:
    host, port = site
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/nope") as r:
            assert r.status == 404
            assert r.content_type == "application/problem+json"
        async with session.delete(f"http://{host}:{port}/v1/cases") as r:
            assert r.status == 405
            assert r.content_type == "application/problem+json"
