"""Minimal HTTP/1.1 server on asyncio streams for the control plane: probes, /metrics, admin API.

Runs under uvloop or the default loop and bounds what any client can hold: header and body sizes,
time per request, and the number of open connections.
"""

from __future__ import annotations

import asyncio
import hmac
import json as _json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("appliance.control")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_LENGTH = re.compile(r"[0-9]+")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The server frames responses itself; a handler must not be able to override these.
_RESERVED = frozenset({"content-length", "content-type", "connection", "transfer-encoding"})


@dataclass(slots=True)
class Request:
    """One parsed request as handed to a route handler (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Response:
    """What a handler returns; the server adds Content-Length and Connection."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes | str = b"",
                 content_type: str = "text/plain; charset=utf-8",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.content_type = content_type
        self.headers = dict(headers or {})

    @classmethod
    def json(cls, obj: object, status: int = 200) -> Response:
        """A compact JSON response."""
        return cls(status, _json.dumps(obj, separators=(",", ":")), "application/json")


Handler = Callable[[Request], Awaitable[Response]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _error(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, f"{status} {_reason(status)}\n", headers=headers)


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def bearer_token_ok(req: Request, token: str) -> bool:
    """True when the request carries `Authorization: Bearer <token>`; an empty token never matches."""
    if not token:
        return False
    scheme, _, cred = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
    return hmac.compare_digest(cred.strip().encode(), token.encode())


class HttpServer:
    """HTTP/1.1 server over a fixed route table, with per-connection and total resource bounds."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler] | None = None, *,
                 max_body: int = 64 * 1024, max_header: int = 16 * 1024,
                 timeout: float = 10.0, max_connections: int = 64) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self.timeout = timeout
        self.max_connections = max_connections
        self._routes: dict[str, dict[str, Handler]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._active = 0
        for (method, path), handler in (routes or {}).items():
            self.route(method, path, handler)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method path` with `handler`; a GET route also answers HEAD."""
        self._routes.setdefault(path, {})[method.upper()] = handler

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (0 picks a free port) and return the bound address."""
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        # The stream limit caps how much readuntil() buffers looking for the end of the head.
        self._server = await asyncio.start_server(self._on_connect, host, port, limit=self.max_header)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self._active >= self.max_connections:
                await self._write(writer, _error(503), head_only=False, keep_alive=False)
                await self._linger(reader, writer)
                return
            self._active += 1
            try:
                await self._serve(reader, writer)
            finally:
                self._active -= 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # client went away or was too slow: just drop the connection
        except Exception:
            log.exception("control HTTP connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                # One deadline for the whole request, so trickling bytes cannot extend it.
                async with asyncio.timeout(self.timeout):
                    req, keep_alive = await self._read_request(reader)
            except _HttpError as e:
                await self._write(writer, _error(e.status), head_only=False, keep_alive=False)
                await self._linger(reader, writer)
                return
            if req is None:
                return
            resp = await self._dispatch(req)
            await self._write(writer, resp, head_only=req.method == "HEAD", keep_alive=keep_alive)
            if not keep_alive:
                return

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[Request | None, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _HttpError(400) from None
            return None, False  # clean EOF between requests
        except asyncio.LimitOverrunError:
            raise _HttpError(431) from None
        # RFC 9112 2.2: ignore empty lines before the request line.
        lines = head[:-4].decode("latin-1").lstrip("\r\n").split("\r\n")
        parts = lines[0].split(" ")
        if (len(parts) != 3 or _CTL.search(lines[0]) or not _TOKEN.fullmatch(parts[0])
                or not parts[1].startswith("/") or not _VERSION.fullmatch(parts[2])):
            raise _HttpError(400)
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            value = value.strip(" \t")
            if not sep or not _TOKEN.fullmatch(name) or _CTL.search(value):
                raise _HttpError(400)
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        # Chunked request bodies are not needed by any client of ours; refusing them also
        # rules out Content-Length/Transfer-Encoding smuggling.
        if "transfer-encoding" in headers:
            raise _HttpError(501)
        length = headers.get("content-length", "0")
        if not _LENGTH.fullmatch(length):
            raise _HttpError(400)
        if len(length) > 18 or int(length) > self.max_body:
            raise _HttpError(413)
        body = await reader.readexactly(int(length)) if int(length) else b""
        conn = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in conn and (version == "HTTP/1.1" or "keep-alive" in conn)
        path, _, qs = target.partition("?")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        return Request(method, unquote(path), query, headers, body), keep_alive

    async def _dispatch(self, req: Request) -> Response:
        methods = self._routes.get(req.path)
        if methods is None:
            return _error(404)
        handler = methods.get(req.method) or (methods.get("GET") if req.method == "HEAD" else None)
        if handler is None:
            allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())
            return _error(405, {"Allow": ", ".join(sorted(allowed))})
        try:
            resp = await handler(req)
            if not isinstance(resp, Response):
                raise TypeError(f"handler returned {type(resp).__name__}, not Response")
            return resp
        except Exception:
            log.exception("control handler for %s %s failed", req.method, req.path)
            return _error(500)

    async def _write(self, writer: asyncio.StreamWriter, resp: Response, *,
                     head_only: bool, keep_alive: bool) -> None:
        lines = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}",
                 f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        for name, value in resp.headers.items():
            # A bad name or a CR/LF in a value would break response framing.
            if _TOKEN.fullmatch(name) and name.lower() not in _RESERVED:
                lines.append(f"{name}: {_CTL.sub(' ', str(value))}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        writer.write(head if head_only else head + resp.body)
        async with asyncio.timeout(self.timeout):
            await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then discard what the client still sends for a moment.

        Closing with unread input makes the kernel send RST, which can destroy the error
        response before the client reads it.
        """
        with suppress(OSError, TimeoutError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(min(self.timeout, 1.0)):
                while await reader.read(65536):
                    pass
