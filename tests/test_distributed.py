"""Distributed training: two CPU processes (gloo) take the same steps as one process.

Each process computes the losses of its shard of every global batch; the loss is
scaled so that DDP's gradient average equals the gradient of the mean over the whole
batch. Batches of 5 (shards of 3 and 2) and of 1 (one shard empty) check the scaling.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from dynnet import synthetic
from dynnet.models import NaryTreeLSTM
from dynnet.train import Trainer, TreeTask
from dynnet.vocab import Vocab

BATCHES = [list(range(0, 5)), list(range(5, 6)), list(range(6, 14))]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    torch.set_num_threads(1)
    trees = synthetic.sentiment_trees(14, seed=5)
    vocab = Vocab(synthetic.VOCABULARY)
    vocab.index_trees(trees)
    torch.manual_seed(0)
    model = NaryTreeLSTM(len(vocab), embed_dim=6, hidden_dim=6)
    trainer = Trainer(model, TreeTask(), trees, batch_size=8, lr=0.01, progress=False,
                      log=None)
    return trees, trainer


def _run_steps(trees, trainer):
    """Takes the steps of BATCHES; returns params and grads (of the last step)."""
    losses = [trainer.step([trees[i] for i in batch]) for batch in BATCHES]
    out = {f"param.{n}": p.detach().clone() for n, p in trainer.model.named_parameters()}
    out.update({f"grad.{n}": p.grad.clone() for n, p in trainer.model.named_parameters()})
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    return out


def _worker(rank, world, port, path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        trees, trainer = _setup()
        assert trainer.world == world and trainer.rank == rank
        result = _run_steps(trees, trainer)
        if rank == 0:
            save_file(result, path)
        dist.barrier()  # no rank leaves while the other still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    # The work is done and written. Tearing gloo down (its group, then the interpreter)
    # can abort the process (SIGABRT, "terminate called without an active exception");
    # the test is about the steps, so the process ends here without either.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_take_the_single_process_steps(tmp_path):
    path = str(tmp_path / "ddp.safetensors")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    distributed = load_file(path)

    trees, trainer = _setup()
    assert trainer.world == 1
    single = _run_steps(trees, trainer)
    assert distributed.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(distributed[key], single[key], atol=1e-6, rtol=0,
                                   msg=lambda m: f"{key}: {m}")


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun over gloo on POSIX")
def test_torchrun_trains_and_writes_one_run(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "dynnet", "train", "tree-lstm", "--epochs", "1",
               "--max-examples", "24", "--batch-size", "8", "--out", str(out),
               "--no-progress", "--model-args", '{"embed_dim": 6, "hidden_dim": 6}']
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1  # only the first process prints
    assert "2 processes" in result.stdout
    assert (out / "checkpoint" / "weights.safetensors").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # epoch 1, test
