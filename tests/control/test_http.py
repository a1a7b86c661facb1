"""The control-plane HTTP server over real loopback sockets, under both asyncio and uvloop."""

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

import pytest
import uvloop

from appliance.control.http import HttpServer, Request, Response, bearer_token_ok

WAIT = 5.0  # upper bound on any single wait; the tests finish far sooner when the code is right


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a test coroutine to completion on the chosen loop, with an overall deadline."""
    runner = asyncio.run if request.param == "asyncio" else uvloop.run
    return lambda coro: runner(asyncio.wait_for(coro, 20))


async def hello(req: Request) -> Response:
    return Response(200, "hello", headers={"X-Test": "yes"})


async def echo_query(req: Request) -> Response:
    return Response.json({"query": req.query, "agent": req.headers.get("user-agent")})


async def echo_body(req: Request) -> Response:
    return Response(201, req.body, content_type="application/octet-stream")


async def boom(req: Request) -> Response:
    raise RuntimeError("handler exploded")


@asynccontextmanager
async def serving(**kwargs):
    srv = HttpServer({("GET", "/hello"): hello, ("GET", "/q"): echo_query}, **kwargs)
    srv.route("POST", "/echo", echo_body)
    srv.route("put", "/echo", echo_body)
    srv.route("GET", "/boom", boom)
    host, port = await srv.start("127.0.0.1", 0)
    assert host == "127.0.0.1" and port > 0
    try:
        yield srv, port
    finally:
        await srv.stop()


async def connect(port):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)


async def read_response(reader, head_only=False):
    """Parse one response; returns (status, headers with lower-cased names, body)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])  # always present
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), WAIT)
    return int(status), headers, body


async def read_eof(reader) -> bytes:
    """Whatever is left until the server closes; fails if it does not close within WAIT."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def exchange(port, raw: bytes, head_only=False):
    reader, writer = await connect(port)
    try:
        writer.write(raw)
        return await read_response(reader, head_only)
    finally:
        writer.close()


def test_get_200_json_and_query(run):
    async def main():
        async with serving() as (_, port):
            status, headers, body = await exchange(
                port, b"GET /q?a=1&b=x%20y&empty= HTTP/1.1\r\nHost: x\r\nUser-Agent: t/1\r\n\r\n")
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"query": {"a": "1", "b": "x y", "empty": ""}, "agent": "t/1"}
            status, headers, body = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (status, body) == (200, b"hello")
            assert headers["content-length"] == "5" and headers["x-test"] == "yes"
            assert headers["content-type"] == "text/plain; charset=utf-8"
    run(main())


def test_404_and_405_with_allow(run):
    async def main():
        async with serving() as (_, port):
            status, _, _ = await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
            assert status == 404
            status, headers, _ = await exchange(port, b"DELETE /hello HTTP/1.1\r\n\r\n")
            assert status == 405 and headers["allow"] == "GET, HEAD"
            status, headers, _ = await exchange(port, b"GET /echo HTTP/1.1\r\n\r\n")
            assert status == 405 and headers["allow"] == "POST, PUT"
    run(main())


def test_head_is_get_without_body(run):
    async def main():
        async with serving() as (_, port):
            reader, writer = await connect(port)
            writer.write(b"HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
            status, headers, body = await read_response(reader, head_only=True)
            assert (status, headers["content-length"], body) == (200, "5", b"")
            # If HEAD had leaked a body, this second response would not parse.
            assert await read_response(reader) == (200, headers, b"hello")
            writer.close()
    run(main())


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /hello\r\n\r\n",
    b"GET hello HTTP/1.1\r\n\r\n",
    b"GET /hello HTTP/9.9\r\n\r\n",
    b"GET /hel\x01lo HTTP/1.1\r\n\r\n",
    b"G(T /hello HTTP/1.1\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nX: a\nb\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
])
def test_malformed_request_is_400_and_closed(run, raw):
    async def main():
        async with serving() as (_, port):
            reader, writer = await connect(port)
            writer.write(raw)
            status, headers, _ = await read_response(reader)
            assert status == 400 and headers["connection"] == "close"
            assert await read_eof(reader) == b""
            writer.close()
    run(main())


def test_body_limit_413(run):
    async def main():
        async with serving(max_body=1000) as (_, port):
            status, _, body = await exchange(
                port, b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
            assert (status, body) == (201, b"x" * 1000)
            # The client sends the whole oversized body; it must still get to read the 413.
            status, headers, _ = await exchange(
                port, b"POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000)
            assert status == 413 and headers["connection"] == "close"
            status, _, _ = await exchange(
                port, b"POST /echo HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
            assert status == 413
    run(main())


def test_default_body_limit_is_64k(run):
    async def main():
        async with serving() as (srv, port):
            assert srv.max_body == 64 * 1024
            status, _, _ = await exchange(port, b"POST /echo HTTP/1.1\r\nContent-Length: 65537\r\n\r\n")
            assert status == 413
    run(main())


def test_header_block_over_16k_is_431(run):
    async def main():
        async with serving() as (_, port):
            ok = b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 15000 + b"\r\n\r\n"
            assert (await exchange(port, ok))[0] == 200
            big = b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"
            status, headers, _ = await exchange(port, big)
            assert status == 431 and headers["connection"] == "close"
    run(main())


def test_transfer_encoding_refused(run):
    async def main():
        async with serving() as (_, port):
            raw = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            assert (await exchange(port, raw))[0] == 501
    run(main())


def test_keep_alive_and_connection_close(run):
    async def main():
        async with serving() as (_, port):
            reader, writer = await connect(port)
            for _ in range(2):
                writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = await read_response(reader)
                assert (status, body, headers["connection"]) == (200, b"hello", "keep-alive")
            writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            status, headers, body = await read_response(reader)
            assert (status, body, headers["connection"]) == (201, b"abc", "close")
            assert await read_eof(reader) == b""
            writer.close()
            # HTTP/1.0 closes unless it asks for keep-alive.
            reader, writer = await connect(port)
            writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert (await read_response(reader))[1]["connection"] == "keep-alive"
            writer.write(b"GET /hello HTTP/1.0\r\n\r\n")
            assert (await read_response(reader))[1]["connection"] == "close"
            assert await read_eof(reader) == b""
            writer.close()
    run(main())


def test_handler_exception_is_500_and_server_survives(run, caplog):
    async def main():
        async with serving() as (_, port):
            reader, writer = await connect(port)
            writer.write(b"GET /boom HTTP/1.1\r\n\r\n")
            status, _, body = await read_response(reader)
            assert status == 500 and b"handler exploded" not in body
            writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            writer.close()
            assert (await exchange(port, b"GET /hello HTTP/1.1\r\n\r\n"))[0] == 200
    with caplog.at_level(logging.ERROR, logger="appliance.control"):
        run(main())
    errors = [r for r in caplog.records if r.name == "appliance.control" and r.exc_info]
    assert len(errors) == 1 and "handler exploded" in str(errors[0].exc_info[1])


def test_idle_connection_is_closed_after_timeout(run):
    async def main():
        async with serving(timeout=0.3) as (_, port):
            reader, writer = await connect(port)
            t0 = time.monotonic()
            assert await read_eof(reader) == b""  # never sent anything
            assert time.monotonic() - t0 < 3.0
            writer.close()
            # An idle keep-alive connection is closed too.
            reader, writer = await connect(port)
            writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            assert await read_eof(reader) == b""
            writer.close()
    run(main())


def test_trickling_client_cannot_extend_the_deadline(run):
    async def main():
        async with serving(timeout=0.5) as (_, port):
            reader, writer = await connect(port)
            t0 = time.monotonic()
            closed = False
            # One header byte every 50 ms would keep a per-read timeout alive forever.
            while time.monotonic() - t0 < WAIT and not closed:
                try:
                    writer.write(b"X")
                    await writer.drain()
                    closed = await asyncio.wait_for(reader.read(1), 0.05) == b""
                except (TimeoutError, asyncio.TimeoutError):
                    pass
                except ConnectionError:
                    closed = True
            assert closed and time.monotonic() - t0 < 3.0
            writer.close()
    run(main())


def test_connection_limit_answers_503(run):
    async def main():
        async with serving(max_connections=2) as (_, port):
            held = []
            for _ in range(2):
                reader, writer = await connect(port)
                writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
                assert (await read_response(reader))[0] == 200  # accepted and counted
                held.append(writer)
            status, headers, _ = await exchange(port, b"GET /hello HTTP/1.1\r\n\r\n")
            assert status == 503 and headers["connection"] == "close"
            held.pop().close()
            # The slot frees once the server sees the close; poll with a deadline.
            deadline = time.monotonic() + WAIT
            while (await exchange(port, b"GET /hello HTTP/1.1\r\n\r\n"))[0] != 200:
                assert time.monotonic() < deadline, "slot never freed"
                await asyncio.sleep(0.02)
            held.pop().close()
    run(main())


def test_stop_closes_open_connections(run):
    async def main():
        srv = HttpServer({("GET", "/hello"): hello})
        _, port = await srv.start("127.0.0.1", 0)
        reader, writer = await connect(port)
        writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        await asyncio.wait_for(srv.stop(), WAIT)
        assert await read_eof(reader) == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    run(main())


def test_bearer_token_ok():
    def req(auth=None):
        return Request("GET", "/admin", {}, {} if auth is None else {"authorization": auth}, b"")

    assert bearer_token_ok(req("Bearer s3cret"), "s3cret")
    assert bearer_token_ok(req("bearer s3cret"), "s3cret")
    assert not bearer_token_ok(req("Bearer wrong"), "s3cret")
    assert not bearer_token_ok(req("Bearer s3cret-and-more"), "s3cret")
    assert not bearer_token_ok(req("Basic s3cret"), "s3cret")
    assert not bearer_token_ok(req("s3cret"), "s3cret")
    assert not bearer_token_ok(req(), "s3cret")
    assert not bearer_token_ok(req("Bearer caf\u00e9"), "s3cret")  # non-ASCII must not raise
    assert not bearer_token_ok(req("Bearer "), "")  # empty configured token never matches
    assert not bearer_token_ok(req(), "")


def test_response_helpers():
    r = Response.json({"ok": True}, status=503)
    assert (r.status, r.body, r.content_type) == (503, b'{"ok":true}', "application/json")
    assert Response(200, "h\u00e9").body == "h\u00e9".encode()


def test_handler_headers_cannot_break_framing(run):
    async def evil(req: Request) -> Response:
        return Response(200, "ok", headers={"X-Evil": "a\r\nSet-Cookie: x=1", "Content-Length": "999",
                                            "Bad Name": "v"})

    async def main():
        srv = HttpServer({("GET", "/evil"): evil})
        _, port = await srv.start("127.0.0.1", 0)
        try:
            status, headers, body = await exchange(port, b"GET /evil HTTP/1.1\r\n\r\n")
            assert (status, body, headers["content-length"]) == (200, b"ok", "2")
            assert "set-cookie" not in headers and "bad name" not in headers
            assert headers["x-evil"] == "a  Set-Cookie: x=1"
        finally:
            await srv.stop()
    run(main())
