"""A throwaway Mosquitto broker for tests: free port, temp config, bounded waits.

    with Mosquitto() as broker:
        ... connect to 127.0.0.1:broker.port ...
        broker.kill()      # SIGKILL: clients see the TCP connection drop
        broker.restart()   # same port again

Mosquitto(tls=True) adds a TLS listener on .tls_port with a fresh self-signed certificate
(.certfile; needs the openssl command). Self-contained (stdlib only) so it can move into a conftest
fixture unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(
        self,
        port: int | None = None,
        extra_conf: str = "",
        binary: str | None = None,
        tls: bool = False,
    ):
        self.binary = binary or find_mosquitto()
        if not self.binary:
            raise FileNotFoundError("mosquitto binary not found")
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls_port: int | None = None
        self.certfile = self.dir / "cert.pem"
        if tls:
            self._make_cert()
            self.tls_port = free_port()
            self.extra_conf += (
                f"\nlistener {self.tls_port} 127.0.0.1\n"
                f"certfile {self.certfile}\nkeyfile {self.dir / 'key.pem'}\n"
            )

    def _make_cert(self) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            raise FileNotFoundError("openssl command not found (needed for tls=True)")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=127.0.0.1", "-keyout", str(self.dir / "key.pem"), "-out", str(self.certfile)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        # A broker started as root drops to the mosquitto user before it reads them.
        self.dir.chmod(0o755)
        for f in ("key.pem", "cert.pem"):
            (self.dir / f).chmod(0o644)

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 5.0) -> Mosquitto:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n{self.extra_conf}\n"
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port}:\n{self.log()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it takes longer than timeout."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown; the kernel closes its sockets."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (keepalive tests)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 5.0) -> Mosquitto:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
