"""A real SMTP server (aiosmtpd) for alert tests: ``smtp_inbox`` keeps every mail it receives."""
from __future__ import annotations

import pytest


class SmtpInbox:
    """A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives."""

    def __init__(self) -> None:
        import socket

        from aiosmtpd.controller import Controller

        self.received: list = []
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                inbox.received.append(envelope)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list:
        import time

        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.received


@pytest.fixture
def smtp_inbox():
    inbox = SmtpInbox()
    inbox.controller.start()
    try:
        yield inbox
    finally:
        inbox.controller.stop()
