"""`ft doctor`, `ft deploy`, `ft trigger`: operations commands' options and handlers (flows/cli.py only
adds the subcommands)."""

from __future__ import annotations

import argparse
import json

DOCTOR_HELP = "check the environment a job would run in and say how to fix what is wrong"
DEPLOY_HELP = "register a flow of this config with the Prefect server: schedule, work pool, concurrency"
TRIGGER_HELP = "start a run of a deployment (FLOW/DEPLOYMENT) with key=value overrides"
COMMANDS = ("doctor", "deploy", "trigger")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help=DOCTOR_HELP, description=DOCTOR_HELP)
    doctor.add_argument("config", nargs="?", help="a job config: also check its tracking store and workdir")
    doctor.add_argument("overrides", nargs="*", help="key=value overrides")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each server")

    deploy = sub.add_parser("deploy", help=DEPLOY_HELP, description=DEPLOY_HELP)
    deploy.add_argument("config", help="YAML config (its parameter in the deployment, paths made absolute)")
    deploy.add_argument("overrides", nargs="*", help="key=value overrides baked into the deployment")
    deploy.add_argument("--name", help="deployment name (default: the job's name)")
    deploy.add_argument(
        "--flow",
        default="finetune",
        help="finetune (default), promote or serve; recipe for a recipe file (its default)",
    )
    when = deploy.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * *" (nightly at 03:00)')
    when.add_argument("--interval", type=float, help="run every N seconds")
    deploy.add_argument("--pool", default=None, help="work pool (default ftflow-process, created if missing)")
    deploy.add_argument("--concurrency", type=int, default=1, help="runs of this deployment at once")
    deploy.add_argument(
        "--on-busy",
        choices=["enqueue", "cancel"],
        default="enqueue",
        help="a run while `concurrency` runs are active waits (enqueue) or is cancelled",
    )
    deploy.add_argument("--paused", action="store_true", help="register with the schedule paused")
    deploy.add_argument(
        "--on-data-change", action="store_true", help="also run when the job's data files change (a watcher)"
    )
    deploy.add_argument(
        "--on-alias", metavar="ALIAS", help="also run when registry alias ALIAS moves (a watcher)"
    )
    deploy.add_argument("--poll-s", type=float, default=60.0, help="how often the watcher looks (seconds)")
    deploy.add_argument(
        "--start-at",
        type=_iso_time,
        help="first run of an --interval schedule (ISO time, e.g. 2026-12-01T03:00Z)",
    )

    trigger = sub.add_parser("trigger", help=TRIGGER_HELP, description=TRIGGER_HELP)
    trigger.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. finetune/nightly")
    trigger.add_argument("overrides", nargs="*", help="key=value overrides for this run")
    trigger.add_argument(
        "--wait", action="store_true", help="wait for the run to end; exit 1 unless it completed"
    )
    trigger.add_argument("--timeout", type=float, default=None, help="with --wait: give up after N seconds")


def _iso_time(text: str):  # -> datetime
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def handle(args: argparse.Namespace) -> int:
    return {"doctor": _doctor, "deploy": _deploy, "trigger": _trigger}[args.command](args)


def _doctor(args: argparse.Namespace) -> int:
    """Exit 0 when nothing failed (warnings allowed), 1 when a check failed."""
    from ftcore.config import load_config
    from ftcore.doctor import diagnose

    cfg = load_config(args.config, args.overrides) if args.config else None
    import os

    from flows.local_server import configured_api_url

    api = os.environ.get("PREFECT_API_URL") or configured_api_url()  # the environment, else the profile
    findings = diagnose(cfg, timeout=args.timeout, prefect_api=api)
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.level == "fail"]
    warned = [f for f in findings if f.level == "warn"]
    print(f"\n{len(findings)} checks: {len(failed)} failed, {len(warned)} warnings")
    return 1 if failed else 0


def _deploy(args: argparse.Namespace) -> int:
    from flows.deploy import DEFAULT_POOL, deploy_file

    deployed = deploy_file(
        args.config,
        args.overrides,
        flow=args.flow,
        name=args.name,
        cron=args.cron,
        interval=args.interval,
        pool=args.pool or DEFAULT_POOL,
        concurrency=args.concurrency,
        collision=args.on_busy,
        paused=args.paused,
        start_at=args.start_at,
        on_data_change=args.on_data_change,
        on_alias=args.on_alias,
        poll_s=args.poll_s,
    )
    print(f"deployment {deployed.name} ({deployed.id}) on work pool {deployed.pool}")
    print(f"schedule: {deployed.schedule or 'none (trigger it)'}")
    if deployed.watcher:
        print(f"event trigger: {deployed.watcher}")
    print(f"start a worker:  prefect worker start --pool {deployed.pool}")
    print(f"run it now:      ft trigger {deployed.name} [key=value ...] --wait")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from flows.trigger import trigger

    run = trigger(args.deployment, args.overrides, wait=args.wait, timeout_s=args.timeout)
    summary = {"flow_run_id": run.flow_run_id, "flow_run_name": run.flow_run_name, "state": run.state}
    if run.registered_version:
        summary["registered_version"] = run.registered_version
    print(json.dumps(summary, indent=2))
    return 0 if not args.wait or run.state == "Completed" else 1
