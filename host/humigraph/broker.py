"""A local MQTT broker for the demo, the virtual boards and the tests.

Mosquitto when it is installed (the broker users run), else amqtt (pure Python) so that
``make demo`` still works on a machine where Mosquitto cannot be installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


def _give_to_broker_user(path: Path) -> None:
    # Mosquitto started as root drops to the "mosquitto" user: it must be able to write its
    # persistence file into our directory, or retained messages and sessions die with a restart.
    if os.geteuid() != 0:
        return
    try:
        import pwd

        pw = pwd.getpwnam("mosquitto")
    except (ImportError, KeyError):
        return
    os.chown(path, pw.pw_uid, pw.pw_gid)


class Mosquitto:
    """A private Mosquitto on 127.0.0.1 and a free port, which can be stopped, killed and restarted.

    The port and the persistence directory are kept across restarts, so a restart is what a broker
    reboot looks like to clients (retained messages and persistent sessions survive a clean stop).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        persistence: bool = True,
        extra_config: str = "",
        workdir: Path | None = None,
        tls: bool = False,
    ) -> None:
        """``tls``: also a TLS listener on ``tls_port`` with a fresh self-signed certificate
        (``certfile``; needs the openssl command)."""
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError(
                "mosquitto is not installed: run `make setup` as root, or "
                "`sudo apt-get install mosquitto mosquitto-clients`"
            )
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="humigraph-mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        _give_to_broker_user(self.dir)
        self.conf = self.dir / "mosquitto.conf"
        self.tls_port: int | None = None
        self.certfile = self.dir / "cert.pem"
        if tls:
            self._make_cert()
            self.tls_port = free_port()
            extra_config += (
                f"\nlistener {self.tls_port} {self.host}\n"
                f"certfile {self.certfile}\nkeyfile {self.dir / 'key.pem'}\n"
            )
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true" if "password_file" not in extra_config else "",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            extra_config,
        ]
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _make_cert(self) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            raise BrokerError(
                "the openssl command is needed for a TLS listener: apt-get install openssl"
            )
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={self.host}", "-keyout", str(self.dir / "key.pem"), "-out", str(self.certfile)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        # A broker started as root drops to the mosquitto user before it reads them.
        self.dir.chmod(0o755)
        for f in ("key.pem", "cert.pem"):
            (self.dir / f).chmod(0o644)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (keepalive tests)."""
        if self.proc and self.running():
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc and self.running():
            self.proc.send_signal(signal.SIGCONT)

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited at start (code {self.proc.returncode}): "
                    f"{self.log.read_text(errors='replace')[-400:]}"
                )
            if wait_port(self.host, self.port, 0.2):
                return self
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): persistence is written."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is written."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedBroker:
    """amqtt in a background thread: the fallback when Mosquitto is not installed."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: object | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker  # type: ignore[import-untyped]
        except ImportError as e:
            raise BrokerError(
                "neither mosquitto nor amqtt is installed: run `make setup` "
                "(or `sudo apt-get install mosquitto`)"
            ) from e
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())  # type: ignore[attr-defined]
                loop.run_forever()
            except BaseException as e:  # reported by start()
                self._error = e

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        # Our readiness probe connects without speaking MQTT; amqtt logs that as an error.
        amqtt_log = logging.getLogger("amqtt")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)
        try:
            self._thread.start()
            if not wait_port(self.host, self.port, timeout):
                raise BrokerError(f"the embedded broker did not start: {self._error}")
            time.sleep(0.2)
        finally:
            amqtt_log.setLevel(level)
        return self

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop and broker and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                fut.result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(10)

    close = stop


def local_broker(port: int | None = None) -> Mosquitto | EmbeddedBroker:
    """Mosquitto when installed, else the embedded broker; not yet started."""
    if find_mosquitto():
        return Mosquitto(port)
    return EmbeddedBroker(port)
