"""Typed errors. Each carries enough context to tell a user what went wrong and where."""

from __future__ import annotations


class FathomError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(FathomError):
    """A setting is missing or inconsistent."""


class ToolError(FathomError):
    """A tool call cannot be served. The message is shown to the model as the tool response."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message


class SearchError(ToolError):
    def __init__(self, message: str) -> None:
        super().__init__("search_urls", message)


class FetchError(ToolError):
    """A page could not be fetched or read (network, status, size, type, deadline)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__("query_url", f"{message} ({url})")
        self.url = url


class SSRFError(FetchError):
    """The URL (or a redirect target) points somewhere we refuse to go."""


class PageBlockedError(FetchError):
    """The site answered with a bot check or a cookie-consent wall instead of the page."""


class ReplayMiss(FetchError):
    """Replay mode was asked for a page that has no stored snapshot."""


class ModelError(FathomError):
    """A model backend failed (after retries, where retrying made sense)."""


class StoreError(FathomError):
    """The job store refused or could not find something."""


# Service-level errors: what a service object (gateway, policy, synthesis, tools) refuses or cannot
# do. Each maps to one gRPC status code in fathom.rpc.status; the CLI prints the message. ``reason``
# is a stable UPPER_SNAKE_CASE code and ``metadata`` machine-readable detail (google.rpc.ErrorInfo).
class ServiceError(FathomError):
    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in metadata.items()}


class InvalidArgument(ServiceError):
    """The request is malformed; nothing was persisted."""

    reason = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    reason = "NOT_FOUND"


class QuotaExceeded(ServiceError):
    """A per-client quota or a size limit."""

    reason = "RESOURCE_EXHAUSTED"


class FailedPrecondition(ServiceError):
    reason = "FAILED_PRECONDITION"


class DeadlineExceeded(ServiceError):
    reason = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    reason = "CANCELLED"


class Unavailable(ServiceError):
    """A dependency (store, broker, model server) is down; safe to retry."""

    reason = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    reason = "UNAUTHENTICATED"
