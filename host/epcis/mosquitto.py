"""A real Mosquitto broker on a free loopback port, with its own config file (for tests,
the benchmark and the simulator). `Mosquitto(port=...)` restarts one on the same port.
`tls=(cafile, certfile, keyfile)` makes the listener TLS only (`require_certificate` asks for a
client certificate signed by that CA); `users={name: password}` turns anonymous access off."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, port: int | None = None, binary: str | None = None,
                 tls: tuple[str, str, str] | None = None, require_certificate: bool = False,
                 users: dict[str, str] | None = None):
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="serialine-mosquitto-"))
        self.proc: subprocess.Popen | None = None
        self.tls, self.require_certificate, self.users = tls, require_certificate, users

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "max_inflight_messages 100",
                 f"user {getpass.getuser()}"]  # run as root, it would switch to one who cannot read our files
        if self.tls:
            cafile, certfile, keyfile = self.tls
            lines += [f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        if self.users:
            passwd = self.dir / "passwd"
            passwd.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b",
                                str(passwd), name, password], check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "mosquitto.log", "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port}")

    def kill(self) -> None:
        """Abrupt loss of the broker (SIGKILL), as when the network or the server dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
