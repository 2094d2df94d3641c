"""Serving a moving champion at one address: blue/green restarts when a registry alias moves.

`Follower` watches `models:/NAME@ALIAS`. When the alias points at a new version it fetches that
version, starts a backend server for it on a new internal port, waits until it is ready, switches the
front (ftcore.serve.proxy) to it, lets the old server finish its requests and stops it. If the new one
cannot be fetched or started, the old one keeps serving; the failure is logged, kept in `events` and
tagged on the version (`ftflow.serve_error`), and that version is not retried until the alias moves
to it again. A backend that dies is started again at the next check. No Prefect here: flows/serve.py
runs `deploy` as its restart task.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.config.sections import ServeConfig
from ftcore.errors import ConfigError, FtflowError
from ftcore.serve.process import ServerHandle, start_server
from ftcore.serve.proxy import Front, FrontServer, Upstream, drain

log = logging.getLogger("ftcore.serve")

SERVE_ERROR_TAG = "ftflow.serve_error"  # on a version that failed to start: why
SERVED_AT_TAG = "ftflow.served_at"  # on a version once it answers behind the front: when
DRAIN_S = 60.0  # the old server's in-flight requests get this long before it is stopped


@dataclass
class FollowSpec:
    """What to follow and how to serve it, resolved from a config, models:/NAME@ALIAS or a NAME."""

    tracking_uri: str
    model_name: str
    alias: str
    serve: ServeConfig = field(default_factory=ServeConfig)
    log_dir: Path | None = None


def follow_spec(
    target: str, overrides: list[str] | None = None, tracking_uri: str | None = None
) -> FollowSpec:
    """A config file (its registry.model_name @ serve.model_alias), models:/NAME@ALIAS, or a bare
    registered model NAME (@champion); a ConfigError before any server starts otherwise."""
    from ftcore import tracking
    from ftcore.serve.target import _CONFIG_SUFFIXES, _parse_model_uri

    path = Path(target).expanduser()
    if path.is_file() and path.suffix in _CONFIG_SUFFIXES:
        from ftcore.config import load_config

        cfg = load_config(str(path), overrides or [])
        uri = tracking_uri or tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
        return FollowSpec(
            uri, cfg.registry.model_name, cfg.serve.model_alias, cfg.serve, cfg.workdir_path / "serve-logs"
        )
    if overrides:
        raise ConfigError(f"key=value overrides apply to a config file, not to {target}")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            f"--follow {target}: set MLFLOW_TRACKING_URI or --tracking-uri to say which registry"
        )
    if target.startswith("models:/"):
        name, alias = _parse_model_uri(target)
        return FollowSpec(uri, name, alias)
    if "/" in target or path.exists():
        raise ConfigError(f"--follow {target!r}: expected a config file, models:/NAME@ALIAS or a model NAME")
    return FollowSpec(uri, target, "champion")


@dataclass
class Deployed:
    version: int
    server: ServerHandle
    upstream: Upstream


class Follower:
    """Keeps the front forwarding to the backend of the version the alias points at."""

    def __init__(
        self,
        spec: FollowSpec,
        front: Front,
        log_dir: Path | None = None,
        ready_timeout_s: float | None = None,
        drain_s: float = DRAIN_S,
    ) -> None:
        from ftcore.builtin import ftflow_home

        self.spec, self.front = spec, front
        self.log_dir = Path(log_dir or spec.log_dir or ftflow_home() / "serve-logs")
        self.ready_timeout_s = ready_timeout_s or spec.serve.ready_timeout_s
        self.drain_s = drain_s
        self.serving: Deployed | None = None
        self.tried: int | None = None  # the last version the alias pointed at when we looked
        self.events: list[dict[str, Any]] = []  # every deploy attempt: version, result, reason, at

    def alias_version(self) -> int | None:
        from ftcore import registry, tracking

        found = registry.get_version_by_alias(
            tracking.get_client(self.spec.tracking_uri), self.spec.model_name, self.spec.alias
        )
        return int(found.version) if found is not None else None

    def pending(self) -> int | None:
        """The version to deploy now: the alias's, when it moved since the last look and is not the
        one serving (a version that failed is tried again only when the alias comes back to it), or
        the serving version again when its server died."""
        if self.serving is not None and not self.serving.server.alive():
            log.warning(
                "version %s exited (status %s): starting it again",
                self.serving.version,
                self.serving.server.process.returncode,
            )
            return self.serving.version
        version = self.alias_version()
        if version is None or version == self.tried:
            return None
        self.tried = version
        if self.serving is not None and self.serving.version == version:
            return None
        return version

    def check(self) -> dict[str, Any] | None:
        """Look at the alias once and deploy what it points at if that is new; the deploy event or None."""
        version = self.pending()
        return self.deploy(version) if version is not None else None

    def deploy(self, version: int) -> dict[str, Any]:
        """Blue/green to `version`: start it, switch the front, drain and stop the old server."""
        from ftcore import tracking

        started = time.monotonic()
        previous = self.serving.version if self.serving else None
        event: dict[str, Any] = {"version": version, "previous": previous, "at": _now()}
        client = tracking.get_client(self.spec.tracking_uri)
        try:
            new = self._start(client, version)
        except Exception as exc:  # fetch or start failed: keep what serves now
            reason = str(exc) if isinstance(exc, FtflowError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "serving %s version %s failed; %s", self.spec.model_name, version, _kept(previous, reason)
            )
            _tag(client, self.spec.model_name, version, SERVE_ERROR_TAG, reason[-4000:])
            event.update(result="failed", reason=reason)
            self.events.append(event)
            return event
        old = self.serving
        self.front.switch(new.upstream)
        self.serving = new
        if old is not None:
            try:
                if not drain(old.upstream, self.drain_s):
                    log.warning(
                        "version %s still had requests after %.0f s; stopping it", old.version, self.drain_s
                    )
            finally:  # interrupted while draining: the old server is stopped all the same
                old.server.stop()
            log.info("stopped version %s (%s)", old.version, old.upstream.url)
        _tag(client, self.spec.model_name, version, SERVED_AT_TAG, event["at"])
        event.update(result="serving", url=new.upstream.url, seconds=round(time.monotonic() - started, 1))
        log.info(
            "%s version %s serving (was %s) after %.1f s",
            self.spec.model_name,
            version,
            previous,
            event["seconds"],
        )
        self.events.append(event)
        return event

    def _start(self, client: Any, version: int) -> Deployed:
        from ftcore.serve.target import fetch_version

        name = self.spec.model_name
        found = client.get_model_version(name, str(version))
        path = fetch_version(self.spec.tracking_uri, name, found, f"models:/{name}/{version}")
        logs = self.log_dir / f"{name}-v{version}"
        key = secrets.token_urlsafe(24)  # the backend's own key: only the front can call it
        log.info("starting %s version %s (backend %s)", name, version, self.spec.serve.backend)
        server = start_server(
            path,
            logs,
            backend=self.spec.serve.backend,
            port=0,  # a free port, bound by the server itself
            api_key=key,
            served_model_name=name,
            max_model_len=self.spec.serve.max_model_len,
            ready_timeout_s=self.ready_timeout_s,
        )
        base = server.url.removesuffix("/v1")
        log.info("started %s version %s on port %s", name, version, base.rsplit(":", 1)[1])
        return Deployed(version, server, Upstream(base, key, name, str(version)))

    def close(self) -> None:
        """Stop the backend server (the front is the caller's)."""
        if self.serving is not None:
            self.serving.server.stop()
            self.serving = None


def start_front(
    spec: FollowSpec, host: str | None = None, port: int | None = None
) -> tuple[Front, FrontServer, str]:
    """The front on serve.host:serve.port (or the given ones); key from FTFLOW_API_KEY or serve.api_key."""
    from ftcore.serve.server import API_KEY_ENV

    secret = spec.serve.api_key.get_secret_value() if spec.serve.api_key else None
    key = os.environ.get(API_KEY_ENV) or secret
    front = Front(key)
    server = FrontServer(front, host or spec.serve.host, spec.serve.port if port is None else port, key)
    return front, server, server.start()


def _kept(previous: int | None, reason: str) -> str:
    kept = f"version {previous} keeps serving" if previous is not None else "nothing is served yet"
    return f"{kept}: {reason}"


def _tag(client: Any, name: str, version: int, key: str, value: str) -> None:
    try:
        client.set_model_version_tag(name, str(version), key, value)
    except Exception as exc:  # recording is best effort: serving goes on
        log.warning("could not tag %s version %s: %s", name, version, exc)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
