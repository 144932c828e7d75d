"""Fixtures of the gRPC tests: certificates made with the openssl CLI, servers on port 0."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from fathom.core.config import Settings
from fathom.rpc.server import Health, build_server


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the server trusts
    rogue_cert: Path  # a client certificate signed by other_ca
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def _leaf(directory: Path, name: str, ca: str, *, server: bool) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=directory)
    ext = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else ""
    ext.write_text(f"{san}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.pem", cwd=directory)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "server", "ca", server=True)
    _leaf(d, "client", "ca", server=False)
    _leaf(d, "rogue", "otherca", server=False)
    return Certs(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
                 client_cert=d / "client.pem", client_key=d / "client.key", other_ca=d / "otherca.pem",
                 rogue_cert=d / "rogue.pem", rogue_key=d / "rogue.key")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


Register = Callable[[grpc.aio.Server], None]


@dataclass
class Running:
    server: grpc.aio.Server
    health: Health
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., object]]:
    """``await start_server(settings, register, names)`` -> Running; stopped at the end of the test."""
    started: list[grpc.aio.Server] = []

    async def start(settings: Settings, register: Register, names: list[str],
                    address: str = "127.0.0.1:0") -> Running:
        server, health, port = build_server(settings, register=register, service_names=names, address=address)
        await server.start()
        started.append(server)
        return Running(server, health, port)

    yield start
    for server in started:
        await server.stop(0)
