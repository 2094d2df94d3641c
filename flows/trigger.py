"""Starting a deployed flow run from code or the command line: `ft trigger NAME key=value [--wait]`.

The Python API is Prefect's own `run_deployment`; `trigger` adds what ftflow users need around it:
the overrides are checked against the deployment's config before the run is created (a typo fails
here, naming the key, not later on a worker), and with `wait` the final state and the registered
model version come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftcore.config import load_config
from ftcore.errors import ConfigError


@dataclass
class Triggered:
    flow_run_id: str
    flow_run_name: str
    state: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def registered_version(self) -> str | None:
        """The model version the run registered, when it finished and registered one."""
        registered = self.result.get("artifacts", {}).get("registered") or {}
        return (registered.get("metadata") or {}).get("version")


def _deployment(name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    if "/" not in name:
        raise ConfigError(f"ft trigger: '{name}' is not FLOW/DEPLOYMENT (see `prefect deployment ls`)")

    async def read() -> Any:
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise ConfigError(
                    f"ft trigger: no deployment named '{name}' on this Prefect server"
                ) from None

    return run_coro_as_sync(read())


def trigger(
    name: str, overrides: list[str] | None = None, wait: bool = False, timeout_s: float | None = None
) -> Triggered:
    """Start a run of deployment `name` ("finetune/nightly"); with `wait`, return when it ends."""
    from prefect.deployments import run_deployment

    from flows.deploy import require_server

    require_server()
    deployment = _deployment(name)
    config = deployment.parameters.get("config")
    if overrides and config is not None:
        load_config(config, overrides)  # a bad key or value fails here, naming it
    recipe = deployment.parameters.get("recipe")
    if overrides and recipe is not None:
        from ftcore.config.recipe import load_recipe

        load_recipe(recipe, overrides)  # jobs.JOB.key=value: the job and the key checked here
    parameters = {"overrides": list(overrides)} if overrides else {}
    run = run_deployment(name, parameters=parameters, timeout=(timeout_s if wait else 0))
    result: dict[str, Any] = {}
    if wait and run.state is not None and run.state.is_completed():
        try:
            value = run.state.result()
            result = value if isinstance(value, dict) else {}
        except Exception:  # result not persisted / not readable from here: the state still says it all
            result = {}
    state = run.state.name if run.state is not None else "Unknown"
    return Triggered(flow_run_id=str(run.id), flow_run_name=run.name, state=state, result=result)
