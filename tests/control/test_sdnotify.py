"""sd_notify against real AF_UNIX datagram sockets: exact datagrams, sanitising, failure handling."""

import logging
import os
import socket
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from appliance.control.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def listener():
    """A bound datagram socket on a short filesystem path (sun_path is limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        path = str(Path(d) / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2.0)
        yield path, sock
        sock.close()


def recv(sock) -> str:
    return sock.recv(4096).decode()


def test_datagrams_are_exact(listener):
    path, sock = listener
    n = Notifier(path)
    assert n.enabled
    assert n.ready()
    assert recv(sock) == "READY=1"
    n.ready("serving")
    assert recv(sock) == "READY=1\nSTATUS=serving"
    n.status("warming up: 3/5")
    assert recv(sock) == "STATUS=warming up: 3/5"
    n.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    n.stopping()
    assert recv(sock) == "STOPPING=1"
    n.mainpid(4242)
    assert recv(sock) == "MAINPID=4242"
    n.send_raw("EXTEND_TIMEOUT_USEC=5000000")
    assert recv(sock) == "EXTEND_TIMEOUT_USEC=5000000"
    n.close()


def test_reloading_carries_monotonic_usec(listener):
    path, sock = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with closing(Notifier(path)) as n:
        n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = recv(sock).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_newlines_cannot_inject_fields(listener):
    path, sock = listener
    with closing(Notifier(path)) as n:
        n.status("bad\nREADY=1\x00tail")
    assert recv(sock) == "STATUS=bad READY=1 tail"


def test_abstract_namespace():
    name = f"appliance-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        with closing(Notifier("@" + name)) as n:
            assert n.ready()
        assert recv(sock) == "READY=1"


def test_reads_notify_socket_from_environment(listener, monkeypatch):
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with closing(Notifier()) as n:
        n.watchdog()
    assert recv(sock) == "WATCHDOG=1"


def test_disabled_is_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.reloading() is False
    assert n._sock is None  # no socket was even created


def test_unsupported_address_disables(caplog):
    with caplog.at_level(logging.WARNING, logger="appliance.control"):
        n = Notifier("vsock:2:1234")
    assert not n.enabled
    assert "unsupported" in caplog.text


def test_unreachable_socket_does_not_raise_and_logs_once(tmp_path, caplog):
    n = Notifier(str(tmp_path / "missing.sock"))
    assert n.enabled
    with caplog.at_level(logging.WARNING, logger="appliance.control"):
        assert n.ready() is False
        assert n.watchdog() is False
        with closing(Notifier("@appliance-test-nobody-" + uuid.uuid4().hex)) as other:
            assert other.stopping() is False
    n.close()
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "abc"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env) == expected


def test_watchdog_interval_from_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 0.5
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None
