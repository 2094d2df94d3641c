"""Many processes: the launch command, the config-time errors, and (slow) real 2-process training on
CPU with gloo. DDP and FSDP must follow the same loss trajectory as one process with twice the
gradient accumulation, and a 2-process run whose launcher is killed after a checkpoint leaves no
rank behind and resumes through the Prefect finetune flow (its train task launches torchrun too).

Why the trajectories can match: the Trainer's dataloader goes through accelerate, which gives every
rank the same seeded sampler (SeedableRandomSampler, data_seed) and deals the batches it yields round
robin (BatchSamplerShard: batch i to rank i % world_size). So optimizer step k of the 2-process run
sees micro-batches 2k (rank 0) and 2k+1 (rank 1): exactly the two micro-batches that one process
with gradient_accumulation_steps=2 accumulates for its step k, each padded the same way. The loss is
normalized by the token count of the whole step across accumulation and ranks (num_items_in_batch,
average_tokens_across_devices), and DDP / FSDP average gradients over the ranks, so both runs take the
same step up to float summation order. Tolerance: 1e-4 on each logged loss and 1e-5 on the weights
(seen: identical to the last digit on this machine).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.artifacts import read_manifest
from ftcore.config.llamafactory import flat_to_nested
from ftcore.errors import ConfigError
from ftcore.steps.common import step_dir
from ftcore.steps.keys import train_key, train_section
from ftcore.train.checkpoints import last_complete_checkpoint
from ftcore.train.distributed import check_distributed, resolve_distributed, sharding
from ftcore.train.launch import TrainingProcessError, worker_command
from ftcore.train.lock import holder
from tests.helpers import REPO, prepared_inputs, small_config

STEPS = 4
TWO = ("train.distributed.launcher=torchrun", "train.distributed.nproc_per_node=2")


def _config(workdir: Path, *overrides: str):
    # 32 rows, 4 per micro-batch: one epoch is 4 steps of 2 micro-batches (1 process x 2 or 2 x 1)
    return small_config(
        workdir,
        "train.report_to=none",
        "train.bf16=false",
        f"train.max_steps={STEPS}",
        "train.save_steps=1",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=4",
        "data.max_samples=32",
        *overrides,
    )


# ---------------------------------------------------------------- fast: commands, keys, errors


def test_torchrun_and_accelerate_commands(tmp_path: Path) -> None:
    cfg = _config(tmp_path, *TWO, "train.distributed.master_port=29555")
    d = resolve_distributed(cfg.train.distributed, env={})
    cmd = worker_command(Path("r.json"), Path("e.json"), d)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in cmd and "--master_port=29555" in cmd and "--max_restarts=0" in cmd
    assert cmd[-4:] == ["-m", "ftcore.train.worker", "r.json", "e.json"]
    acc = worker_command(Path("r.json"), Path("e.json"), d.model_copy(update={"launcher": "accelerate"}))
    assert acc[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes=2" in acc
    assert acc[-4:] == ["--module", "ftcore.train.worker", "r.json", "e.json"]
    single = worker_command(
        Path("r.json"), Path("e.json"), resolve_distributed(_config(tmp_path).train.distributed, {})
    )
    assert single == [sys.executable, "-m", "ftcore.train.worker", "r.json", "e.json"]


def test_llamafactory_environment_variables_pick_the_launcher(tmp_path: Path) -> None:
    d = _config(tmp_path).train.distributed
    env = {
        "FORCE_TORCHRUN": "1",
        "NPROC_PER_NODE": "4",
        "NNODES": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
    }
    got = resolve_distributed(d, env)
    assert (got.launcher, got.nproc_per_node, got.nnodes, got.node_rank, got.master_addr) == (
        "torchrun",
        4,
        2,
        1,
        "10.0.0.1",
    )
    with pytest.raises(ConfigError, match="node_rank 2 must be below nnodes 2"):
        resolve_distributed(d, {**env, "NODE_RANK": "2"})
    assert resolve_distributed(d, {}).launcher == "none"


def test_the_key_holds_process_count_and_shard_settings_not_addresses(tmp_path: Path) -> None:
    one = train_section(_config(tmp_path))
    assert "distributed" not in one  # single-process keys are unchanged by the new section
    two = train_section(_config(tmp_path, *TWO))
    assert two["distributed"]["world_size"] == 2
    moved = train_section(_config(tmp_path, *TWO, "train.distributed.master_port=29999"))
    assert moved == two
    fsdp = train_section(_config(tmp_path, *TWO, "train.distributed.fsdp=configs/fsdp/full_shard.yaml"))
    assert fsdp["distributed"]["fsdp_config"]["reshard_after_forward"] is True and fsdp != two


def test_shipped_sharding_configs_parse(tmp_path: Path) -> None:
    for path in sorted((REPO / "configs" / "deepspeed").glob("*.json")):
        cfg = _config(tmp_path, *TWO, f"train.distributed.deepspeed=configs/deepspeed/{path.name}")
        stage = sharding(cfg)["deepspeed"]["zero_optimization"]["stage"]
        assert stage == int(path.name.split("_z")[1][0]), path.name
        assert ("offload" in path.name) == (
            "offload_optimizer" in sharding(cfg)["deepspeed"]["zero_optimization"]
        )
    for path in sorted((REPO / "configs" / "fsdp").glob("*.yaml")):
        cfg = _config(tmp_path, *TWO, f"train.distributed.fsdp=configs/fsdp/{path.name}")
        assert sharding(cfg)["fsdp"] is True
    options = sharding(_config(tmp_path, *TWO, "train.distributed.fsdp=full_shard auto_wrap offload"))
    assert options["fsdp_config"] == {"reshard_after_forward": True, "cpu_offload": True}
    nested = flat_to_nested({"stage": "sft", "deepspeed": "configs/deepspeed/ds_z3_config.json"})
    assert nested["train"]["distributed"]["deepspeed"] == "configs/deepspeed/ds_z3_config.json"


def test_config_time_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"deepspeed .* and fsdp .* are both set"):
        _config(
            tmp_path,
            *TWO,
            "train.distributed.deepspeed=configs/deepspeed/ds_z2_config.json",
            "train.distributed.fsdp=full_shard",
        )
    missing = _config(tmp_path, *TWO, "train.distributed.deepspeed=nowhere/ds.json")
    with pytest.raises(
        ConfigError, match=r"train\.distributed\.deepspeed: config file .*nowhere/ds\.json does not exist"
    ):
        check_distributed(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"train\.distributed\.deepspeed: .*broken\.json is not valid JSON"):
        check_distributed(_config(tmp_path, *TWO, f"train.distributed.deepspeed={broken}"))
    with pytest.raises(ConfigError, match="fsdp needs a launcher"):
        check_distributed(_config(tmp_path, "train.distributed.fsdp=full_shard"))
    with pytest.raises(ConfigError, match="option 'hybrid_shard' is not supported by FSDP2"):
        check_distributed(_config(tmp_path, *TWO, "train.distributed.fsdp=hybrid_shard"))
    if not torch.cuda.is_available():  # DeepSpeed on CPUs compiles C++ ops: without a compiler, said up front
        ds = _config(tmp_path, *TWO, "train.distributed.deepspeed=configs/deepspeed/ds_z2_config.json")
        z3 = _config(tmp_path, *TWO, "train.distributed.deepspeed=configs/deepspeed/ds_z3_config.json")
        with pytest.raises(ConfigError, match="ZeRO-3 without a GPU"):
            check_distributed(z3)
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(ConfigError, match="DeepSpeed on CPUs compiles its C\\+\\+ ops"):
            check_distributed(ds)


def test_layerwise_optimizers_refuse_many_processes(tmp_path: Path) -> None:
    from ftcore.config.sections import TrainConfig

    fields = [
        (s, f) for s, f in (("galore", "layerwise"), ("apollo", "layerwise")) if s in TrainConfig.model_fields
    ]
    if not fields:
        pytest.skip("train.galore / train.apollo come with the methods branch (h-methods)")
    for section, field in fields:
        cfg = _config(tmp_path, *TWO, f"train.{section}.{field}=true")
        with pytest.raises(ConfigError, match=rf"train\.{section}\.{field} .*nproc_per_node=2"):
            check_distributed(cfg)


# ---------------------------------------------------------------- slow: real processes


def _losses(trained_path: str) -> list[float]:
    state = Path(trained_path).parent / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json"
    return [float(e["loss"]) for e in json.loads(state.read_text())["log_history"] if "loss" in e]


def _adapter(trained_path: str) -> dict[str, torch.Tensor]:
    return load_file(Path(trained_path) / "adapter_model.safetensors")


def _assert_same_run(ours, theirs) -> None:
    assert _losses(ours.path) == pytest.approx(_losses(theirs.path), abs=1e-4)
    a, b = _adapter(ours.path), _adapter(theirs.path)
    assert a.keys() == b.keys()
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """One process, gradient_accumulation_steps=2: the run the 2-process runs must reproduce."""
    cfg = _config(tmp_path_factory.mktemp("one"), "train.gradient_accumulation_steps=2")
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    assert trained.metadata["processes"] == 1
    losses = _losses(trained.path)
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    return trained


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_double_accumulation(tmp_path: Path, reference) -> None:
    from mlflow.tracking import MlflowClient

    cfg = _config(tmp_path, *TWO, "train.report_to=mlflow")  # report_to is not in the key
    trained = steps.train(cfg, *prepared_inputs(cfg))
    assert trained.metadata["processes"] == 2 and trained.metadata["sharded"] is False
    _assert_same_run(trained, reference)
    # rank 0 alone tracks: one run, each step's loss logged once
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert [r.info.run_id for r in runs] == [trained.metadata["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "train/loss")) == STEPS


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_with_double_accumulation(tmp_path: Path, reference) -> None:
    cfg = _config(tmp_path, *TWO, "train.distributed.fsdp=configs/fsdp/full_shard.yaml")
    trained = steps.train(cfg, *prepared_inputs(cfg))
    assert trained.metadata["processes"] == 2 and trained.metadata["sharded"] is True  # really sharded
    _assert_same_run(trained, reference)  # and the gathered weights are the whole model


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 min idle: 3 trainings, 2 of them 2-process groups (each start is slow)
@pytest.mark.usefixtures("prefect_local")
def test_a_killed_launcher_leaves_no_rank_and_the_prefect_flow_resumes_the_run(
    tmp_path: Path, reference
) -> None:
    """SIGKILL torchrun after a checkpoint: both ranks follow it (die_with_parent), none is left. The
    finetune flow's train task then launches the same 2-process group and resumes from the checkpoint
    to the state an uninterrupted run reaches."""
    from flows.finetune import finetune

    cfg = _config(
        tmp_path / "job", *TWO, "eval.enabled=false", "registry.enabled=false", "export.merge=false"
    )
    model, data = prepared_inputs(cfg)
    out = step_dir(cfg, "train", train_key(cfg, model, data), cfg.train.output_dir)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            steps.train(cfg, model, data)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    ranks: list[int] = []
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        if last_complete_checkpoint(out / "checkpoints") is not None:
            launcher = int(holder(out)["worker"])
            ranks = _children(launcher)
            os.kill(launcher, signal.SIGKILL)  # no clean stop: its ranks must notice on their own
            break
        time.sleep(0.02)
    thread.join()
    assert len(ranks) == 2, ranks
    assert failure and isinstance(failure[0], TrainingProcessError), failure
    gone = time.monotonic() + 30  # the ranks' parent watch polls every second; gloo then fails fast
    while any(_alive(pid) for pid in ranks) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not [pid for pid in ranks if _alive(pid)], "a rank outlived its killed launcher"
    assert read_manifest(out) is None, "the kill must land before the end of training"
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) < STEPS

    result = finetune(cfg)  # in-process Prefect flow: its train task launches torchrun again
    row = next(r for r in result["summary"] if r["step"] == "train")
    assert row["state"] == "Completed" and Path(row["path"]).parent == out
    resumed = read_manifest(out)
    assert resumed is not None and resumed.metadata["resumed_from"] == str(checkpoint)
    assert resumed.metadata["global_step"] == STEPS and resumed.metadata["processes"] == 2
    _assert_same_run(resumed, reference)  # resumed = uninterrupted = one process, double accumulation
