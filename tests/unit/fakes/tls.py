"""A throwaway certificate for 127.0.0.1 (made by the openssl command line tool), and the TLS
contexts of a server that presents it and of a client that trusts it."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client(self) -> ssl.SSLContext:
        """A default client context (host name checked) that trusts this certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(directory: Path, name: str = "127.0.0.1") -> Certificate:
    """A self-signed certificate for `name` (an IP address), valid for a day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -nodes -days 1 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
    names = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=IP:{name}"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*command.split(), *names, *files], check=True, capture_output=True)
    return Certificate(cert, key)
