"""TLS and mutual TLS credentials from ``Settings.plane``.

Server: ``tls_cert`` + ``tls_key`` turn TLS on; ``tls_client_ca`` adds mutual TLS (a client without
a certificate chaining to it is refused during the handshake). Client: ``tls_ca`` (or a client
certificate) turns TLS on; ``tls_client_cert`` + ``tls_client_key`` present a client certificate.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from fathom.core.config import Settings
from fathom.core.errors import ConfigError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for a secure port, or None for plaintext (no certificate configured)."""
    plane = settings.plane
    if plane.tls_cert is None and plane.tls_key is None:
        if plane.tls_client_ca is not None:
            raise ConfigError("plane.tls_client_ca (mutual TLS) needs plane.tls_cert and plane.tls_key")
        return None
    if plane.tls_cert is None or plane.tls_key is None:
        raise ConfigError("TLS needs both plane.tls_cert and plane.tls_key")
    pair = (_read(plane.tls_key, "TLS key"), _read(plane.tls_cert, "TLS certificate"))
    if plane.tls_client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(plane.tls_client_ca, "client CA"), require_client_auth=True
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials for a secure channel, or None for plaintext."""
    plane = settings.plane
    has_client_cert = plane.tls_client_cert is not None or plane.tls_client_key is not None
    if plane.tls_ca is None and not has_client_cert:
        return None
    if has_client_cert and (plane.tls_client_cert is None or plane.tls_client_key is None):
        raise ConfigError("a client certificate needs both plane.tls_client_cert and plane.tls_client_key")
    root = _read(plane.tls_ca, "CA certificate") if plane.tls_ca is not None else None
    key = _read(plane.tls_client_key, "client key") if plane.tls_client_key is not None else None
    cert = _read(plane.tls_client_cert, "client certificate") if plane.tls_client_cert is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
