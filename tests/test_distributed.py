import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import pruning_utils as pu
from pruning_utils.config import REPO_ROOT, seed_everything
from pruning_utils.engine import data, distributed
from pruning_utils.method import schedules


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    return (data.BatchLoader(x, y, 16, shuffle=True, augment=True, seed=1, pad=1),
            data.BatchLoader(x[:32], y[:32], 16))


def _prune_chain(checkpoint_dir=None) -> dict:
    """Prune a BatchNorm-free chain (per-rank BatchNorm statistics would differ from one process's) for two
    epochs: alpha ramped over one, then one at alpha 0; return the final weights."""
    seed_everything(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    pu.attach_branches(model, 0.5, init="l1")
    train, val = _loaders()
    pu.prune(model, train, val, schedules.ramp("linear", 1, 1), pu.PruneConfig(lr=0.05), checkpoint_dir=checkpoint_dir,
             progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _rank_worker(rank, world, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    distributed.setup()
    try:
        state = _prune_chain(checkpoint_dir=os.path.join(folder, f"stages_rank{rank}"))
        torch.save({"state": state, "world": distributed.world_size(), "sharded": distributed.shard([]) != []},
                   os.path.join(folder, f"rank{rank}.pt"))
    finally:
        distributed.cleanup()


def test_sharded_loader_hands_each_rank_its_share():
    train, _ = _loaders()
    shards = [distributed.ShardedLoader(train, r, 2) for r in range(2)]
    train.load_state_dict({"generator": torch.Generator().manual_seed(1).get_state()})
    full = list(train)
    parts = []
    for shard in shards:
        shard.load_state_dict({"generator": torch.Generator().manual_seed(1).get_state()})
        parts.append(list(shard))
    assert len(shards[0]) == len(train)
    for (x, y), (x0, y0), (x1, y1) in zip(full, *parts):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    with pytest.raises(ValueError, match="rank 2"):
        distributed.ShardedLoader(train, 2, 2)


def test_single_process_is_not_distributed():
    model = nn.Linear(2, 2)
    assert distributed.wrap(model) is model and distributed.is_main() and distributed.world_size() == 1


def test_two_gloo_processes_match_one_over_the_same_global_batch(tmp_path):
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _prune_chain()
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert saved["world"] == 2 and saved["sharded"]
        state = saved["state"]
        assert all(float(v) == 0.0 for k, v in state.items() if k.endswith("alpha"))
        for key, value in single.items():
            assert torch.allclose(state[key].float(), value.float(), atol=1e-5), key
    assert (tmp_path / "stages_rank0" / "stage_01.pt").is_file()
    assert not (tmp_path / "stages_rank1").exists(), "only rank 0 writes checkpoints"


def test_torchrun_command_line_writes_once(tmp_path):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PRUNING_UTILS_HOME=str(tmp_path))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "pruning_utils.cli", "--width", "0.0625", "--baseline-epochs", "1",
               "--ramp-epochs", "1", "--final-epochs", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 process(es)") == 1
    record = json.loads(out.read_text())
    assert record["metrics"]["world_size"] == 2 and record["command"].startswith("torchrun --nproc_per_node 2")
    assert record["metrics"]["fold_relative_max_difference"] <= 1e-5
    assert pu.load_plain(out.with_suffix(".plain.pt")) is not None
