"""The twin as `make demo` runs it (``python -m twin.run``), as a child process on free ports,
for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Optional
from zoneinfo import ZoneInfo

import pytest

from chalicelib.config import load_campaign
from tests.conftest import TEST_TOKEN_KEY

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_ports(count: int) -> list[int]:
    # All sockets open at once, so the kernel cannot hand out the same port twice.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    # SO_REUSEADDR as the servers use it: TIME_WAIT is free, a listener is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # hand the 303 back to the caller instead of following it


# No proxies: the twin is on 127.0.0.1 whatever HTTP_PROXY says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


@dataclass
class TwinProcess:
    process: subprocess.Popen[bytes]
    moto_port: int
    api_port: int
    console_port: int
    log: IO[bytes]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_for_health(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"twin exited with {self.process.returncode} before /health answered:\n{self.output()}")
            try:
                # The API first, the dev console last of all (the twin starts it after its event
                # sources): both up is the twin ready, as its banner says.
                with OPENER.open(f"{self.api_url}/health", timeout=2) as response:
                    api_up = response.status == 200
                with OPENER.open(f"{self.console_url}/outbox.json", timeout=2) as response:
                    if api_up and response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        pytest.fail(f"/health and the console did not answer within {START_TIMEOUT:.0f}s:\n{self.output()}")

    def start_on_a_monday_morning(self) -> None:
        """Move the twin's clock (offset 0 at start) to the next Monday, 10:00 in the demo
        campaign's time zone: a test that walks through days of nurture then meets the same send
        windows (Monday to Friday, 9 to 17) and weekend whenever it runs."""
        zone = ZoneInfo(load_campaign("demo").timezone)
        now = datetime.now(zone)
        monday = (now + timedelta(days=7 - now.weekday())).replace(hour=10, minute=0, second=0, microsecond=0)
        seconds = int((monday - now).total_seconds()) + 1
        request = urllib.request.Request(f"{self.console_url}/clock/advance?seconds={seconds}", data=b"", method="POST")
        with OPENER.open(request, timeout=10) as response:
            assert response.status == 200

    def console_json(self, path: str) -> Any:
        with OPENER.open(f"{self.console_url}{path}", timeout=10) as response:
            return json.loads(response.read())


@contextmanager
def running_twin(
    tmp_path: Path, tick_seconds: float = 1.0, extra_env: Optional[dict[str, str]] = None
) -> Iterator[TwinProcess]:
    moto_port, api_port, console_port = free_ports(3)
    # conftest's autouse fixture cleared AWS_*/TRELLIS_*; the child gets exactly what it needs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRELLIS_"))}
    env.update(
        {
            "TRELLIS_MOTO_PORT": str(moto_port),
            "TRELLIS_API_PORT": str(api_port),
            "TRELLIS_CONSOLE_PORT": str(console_port),
            "TRELLIS_TOKEN_KEY": TEST_TOKEN_KEY,
            "TRELLIS_TICK_SECONDS": str(tick_seconds),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    # Output to a file, not a pipe: nobody reads a pipe while the twin runs, and a full one blocks it.
    with (tmp_path / "twin.log").open("w+b") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "twin.run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield TwinProcess(process, moto_port, api_port, console_port, log)
        finally:
            if process.poll() is None:
                # Let the twin stop its API child first; kill it only if that does not work.
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
