"""Debian's caddy (unpacked by scripts/ensure-system-deps.sh) running the committed deploy/caddy/Caddyfile as the
HTTPS front of a server of the suite: free ports on 127.0.0.1, its local CA and state in a directory of the test's,
no admin endpoint."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

from tests.support.redis_process import free_port
from tests.support.tools import ROOT, debian_tool, stop_tool

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
SITE = "localhost"  # the Caddyfile's default site: a certificate from Caddy's local CA
ADDRESS = "127.0.0.1"  # served too: clients that resolve localhost to ::1 first (Node 18) connect by address


class CaddyFront:
    def __init__(self, directory: Path, upstream: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.http_port, self.https_port = free_port(), free_port()
        self.base_url = f"https://{SITE}:{self.https_port}"
        self.address_url = f"https://{ADDRESS}:{self.https_port}"
        data = directory / "data"
        # Where the local CA keeps its root (XDG_DATA_HOME/caddy/...): what a client of the front trusts.
        self.root_certificate = data / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        environment = {
            **os.environ,
            "XDG_DATA_HOME": str(data),
            "XDG_CONFIG_HOME": str(directory / "config"),
            "SITE_ADDRESS": f"{SITE}, {ADDRESS}",
            "API_UPSTREAM": upstream,
            "HTTP_PORT": str(self.http_port),
            "HTTPS_PORT": str(self.https_port),
            "CADDY_ADMIN": "off",
            "CADDY_BIND": ADDRESS,
        }
        self.log_path = directory / "caddy.log"
        self.log = self.log_path.open("wb")
        command = [debian_tool("caddy", "caddy"), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
        self.process = subprocess.Popen(command, env=environment, stdout=self.log, stderr=subprocess.STDOUT)

    def tls_context(self) -> ssl.SSLContext:
        """Verifies the front's certificate against its local CA's root, and nothing else."""
        return ssl.create_default_context(cafile=str(self.root_certificate))

    def wait_ready(self, within: float = 20.0) -> None:
        """Until a TLS handshake on the HTTPS port verifies against the local root (the certificate is issued)."""
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, f"caddy exited:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"caddy not serving TLS within {within} s:\n{self.log_path.read_text()}"
            if self.root_certificate.exists() and self._handshakes():
                return
            time.sleep(0.1)

    def _handshakes(self) -> bool:
        try:
            raw = socket.create_connection((ADDRESS, self.https_port), timeout=2)
            with raw, self.tls_context().wrap_socket(raw, server_hostname=SITE):
                return True
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        stop_tool(self.process)
        self.log.close()
