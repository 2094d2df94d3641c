"""The front of blue/green serving: one stable address that forwards /v1/* (streaming included) and
/health to whichever backend server is current, so the model behind it can change without clients
noticing.

Clients send the front's key; the front sends the backend's own key (backends listen on 127.0.0.1 with
a random key of their own). Answers carry `x-ftflow-model` and `x-ftflow-model-version` headers naming
the version that produced them. Requests in flight on the old backend are counted, so it is stopped
only once they are done (`drain`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ftcore.serve.app import _error, unauthorized
from ftcore.serve.server import check_bind, url_of

log = logging.getLogger("ftcore.serve")

_HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
_HOP_HEADERS |= {"proxy-authorization", "proxy-authenticate", "content-length", "authorization"}
_OWN_HEADERS = {"server", "date"}  # the front's uvicorn sets its own
_VERSION_HEADERS = ("x-ftflow-model", "x-ftflow-model-version")


@dataclass
class Upstream:
    """A backend server the front may forward to, and how many requests it is answering now."""

    url: str  # base URL, no /v1
    api_key: str | None = field(repr=False)
    model: str
    version: str
    inflight: int = 0


class Front:
    """Which upstream is current; the ASGI app that forwards to it (`app()`)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.current: Upstream | None = None
        self._wanted = api_key.encode() if api_key else None

    def switch(self, upstream: Upstream) -> Upstream | None:
        """New requests go to `upstream` from now on; returns the one they went to before."""
        old, self.current = self.current, upstream
        log.info("front: forwarding to %s version %s at %s", upstream.model, upstream.version, upstream.url)
        return old

    def app(self) -> Any:
        from contextlib import asynccontextmanager

        import httpx
        from fastapi import FastAPI
        from fastapi.responses import StreamingResponse

        state: dict[str, httpx.AsyncClient] = {}

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            # no read timeout: a long answer streams for as long as the backend generates
            timeout = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=60.0)
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
                state["client"] = client
                yield

        app = FastAPI(title="ftflow serving front", docs_url=None, redoc_url=None, lifespan=lifespan)

        @app.middleware("http")
        async def authorize(request: Request, call_next):
            refused = unauthorized(request, self._wanted)
            return refused if refused is not None else await call_next(request)

        @app.get("/health")
        async def health() -> Any:
            from fastapi.responses import JSONResponse

            up = self.current
            if up is None:
                return JSONResponse({"status": "starting"}, status_code=503)
            try:
                ok = (await state["client"].get(f"{up.url}/health", timeout=5)).status_code == 200
            except httpx.HTTPError:
                ok = False
            body = {"status": "ok" if ok else "unavailable", "model": up.model, "version": up.version}
            return JSONResponse(body, status_code=200 if ok else 503, headers=_label(up))

        @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
        async def forward(path: str, request: Request) -> Any:
            up = self.current
            if up is None:
                return _error(503, "no model is being served yet: the first version is starting")
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            if up.api_key:
                headers["authorization"] = f"Bearer {up.api_key}"
            client = state["client"]
            outgoing = client.build_request(
                request.method,
                f"{up.url}/v1/{path}",
                params=request.query_params,
                headers=headers,
                content=await request.body(),
            )
            up.inflight += 1
            try:
                answer = await client.send(outgoing, stream=True)
            except httpx.HTTPError as exc:
                up.inflight -= 1
                return _error(502, f"the model server (version {up.version}) did not answer: {exc}")
            dropped = _HOP_HEADERS | _OWN_HEADERS
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
            return StreamingResponse(
                _relay(answer, up), status_code=answer.status_code, headers={**kept, **_label(up)}
            )

        return app


async def _relay(answer: Any, up: Upstream) -> AsyncIterator[bytes]:
    """The backend's bytes as they come (SSE events included); the request counts as in flight until
    the last one is sent or the client goes away."""
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        up.inflight -= 1
        await answer.aclose()


def _label(up: Upstream) -> dict[str, str]:
    return dict(zip(_VERSION_HEADERS, (up.model, up.version), strict=True))


def drain(upstream: Upstream, timeout_s: float) -> bool:
    """Wait until `upstream` answers no request (the front no longer sends it any); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while upstream.inflight > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class FrontServer:
    """The front's HTTP server, run by uvicorn in a thread of this process (the caller keeps the main
    thread, e.g. to poll the registry). Binding beyond localhost needs a key (check_bind)."""

    def __init__(self, front: Front, host: str, port: int, api_key: str | None) -> None:
        check_bind(host, api_key)
        self.front, self.host, self.port = front, host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 60.0) -> str:
        """Listen; returns the /v1 URL (port 0: the port the system picked)."""
        import uvicorn

        from ftcore.errors import ConfigError

        config = uvicorn.Config(self.front.app(), host=self.host, port=self.port, log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ftflow-front", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"serve: the front cannot listen on {self.host}:{self.port} "
                    "(in use, or not an address of this machine)"
                )
            time.sleep(0.05)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return url_of(self.host, self.port)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
