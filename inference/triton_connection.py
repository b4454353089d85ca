"""One model's connection to a Triton server (runtime_triton.py): a client per thread
(tritonclient's are not thread-safe), the request headers, and calls retried on
connection errors, timeouts and UNAVAILABLE, then answered `triton_unavailable`; any
other refusal by the server is `triton_error`."""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from aidx.inference.errors import AidxError, ErrorKind, ModelUnavailable
from aidx.inference.settings_sections import TritonProtocol

if TYPE_CHECKING:
    from aidx.inference.runtime_triton import TritonOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE_STATUSES = {"503", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}


class TritonUnavailable(ModelUnavailable):
    """The server cannot be reached or says it cannot serve now (503)."""

    code = "triton_unavailable"


class TritonError(AidxError):
    """The server refused a request for another reason (a bad gateway for aidx)."""

    kind = ErrorKind.upstream_error
    code = "triton_error"


class TritonConnection:
    """The server that serves model `name`, over HTTP or gRPC as `options` say."""

    def __init__(self, name: str, options: TritonOptions) -> None:
        self.name = name
        self.options = options
        self.grpc = options.protocol is TritonProtocol.grpc
        self.lib: Any = grpcclient if self.grpc else httpclient
        # gRPC metadata keys must be lower case; HTTP headers do not care.
        self._headers = {k.lower(): v for k, v in options.headers.items()}
        self._local = threading.local()

    def client(self) -> Any:
        """This thread's client, made on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            scheme, _, address = self.options.url.rpartition("://")  # "host:port" expected
            ssl = scheme in ("https", "grpcs")
            if self.grpc:
                client = grpcclient.InferenceServerClient(address, ssl=ssl)
            else:
                client = httpclient.InferenceServerClient(
                    address,
                    ssl=ssl,
                    connection_timeout=self.options.timeout_s,
                    network_timeout=self.options.timeout_s,
                )
            self._local.client = client
        return client

    def drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close; it is gone anyway
                log.debug("closing a Triton client failed", exc_info=True)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments every client call takes: headers, and gRPC's timeout."""
        kwargs: dict[str, Any] = {"headers": self._headers}
        if self.grpc:
            kwargs["client_timeout"] = self.options.timeout_s
        return kwargs

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """`fn(client)`, retried on connection errors, timeouts and UNAVAILABLE."""
        attempts = self.options.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn(self.client())
            except InferenceServerException as exc:
                status = str(exc.status())
                if status not in _RETRYABLE_STATUSES:
                    raise TritonError(
                        f"Triton refused {what} for {self.name!r} ({status}): {exc.message()}"
                    ) from None
                reason = f"{status} {exc.message()}"
            # refused, reset, timed out; HTTPException: e.g. geventhttpclient's
            # HTTPConnectionClosed when the server drops a pooled keep-alive connection.
            except (OSError, TimeoutError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.drop_client()
            if attempt < attempts:
                time.sleep(self.options.retry_backoff_s * 2 ** (attempt - 1))
        log.warning("Triton at %s: %s failed %d times", self.options.url, what, attempts)
        raise TritonUnavailable(
            f"the Triton server at {self.options.url} is unavailable for {self.name!r} "
            f"({what}: {reason})"
        )
