"""GPUs and several processes.

    python tutorials/05_gpu_and_multiprocess.py [--small]     # starts 2 processes itself
    torchrun --nproc_per_node=2 tutorials/05_gpu_and_multiprocess.py

1. Devices: move the model with ``model.to(device)``; dynnet runs every batched call
   where its inputs live. The prebuilt models make their per-example tensors (word
   ids, labels) on the device of their weights, so nothing else changes.
2. Data parallelism: every process takes the same global batch, computes the losses
   of its shard ``batch[rank::world]`` with ``loss.batch``, and
   ``DistributedDataParallel`` averages the gradients. Scaling each process's summed
   loss by ``world / len(batch)`` makes that average the gradient of the mean loss
   over the whole batch: the same step as one process. The script checks it.

The command line does all of this: ``torchrun --nproc_per_node=2 -m dynnet train
tree-lstm`` (gloo on the CPU, NCCL with ``--device cuda``, one GPU per process).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dynnet import synthetic
from dynnet.models import NaryTreeLSTM
from dynnet.vocab import Vocab

WORLD = 2


def pick_device(rank=0, world=1):
    """One GPU per process when there are enough, else the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= world:
        return torch.device("cuda", rank)
    return torch.device("cpu")


def setup(small, device):
    torch.manual_seed(0)  # the same data and initial weights in every process
    trees = synthetic.sentiment_trees(64 if small else 1024, seed=0)
    vocab = Vocab(synthetic.VOCABULARY)
    vocab.index_trees(trees)
    dim = 16 if small else 128
    model = NaryTreeLSTM(len(vocab), embed_dim=dim, hidden_dim=dim).to(device)
    return trees, model


class ShardLoss(nn.Module):
    """What DDP wraps: the summed loss of this process's shard, scaled."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, shard, scale):
        return self.model.loss.batch(shard).sum() * scale


def train(trees, model, rank, world, batch_size=16):
    module = ShardLoss(model)
    if world > 1:
        module = DistributedDataParallel(module)  # every step uses every parameter
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for start in range(0, len(trees), batch_size):
        batch = trees[start:start + batch_size]
        optimizer.zero_grad()
        loss = module(batch[rank::world], world / len(batch))
        loss.backward()
        optimizer.step()
    return model


def worker(rank, world, small, init_method=None):
    device = pick_device(rank, world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method or "env://", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    try:
        trees, model = setup(small, device)
        train(trees, model, rank, world)
        if rank == 0:
            print(f"{world} processes ({backend}, {device}) trained on "
                  f"{len(trees)} trees, {len(trees) // world} per process")
            _, alone = setup(small, device)  # the same steps in this process alone
            train(trees, alone, 0, 1)
            # equal to float rounding: the sums run in another order (Adam's steps
            # enlarge such differences on near-zero gradients)
            same = all(torch.allclose(a, b, atol=1e-4) for a, b in
                       zip(model.parameters(), alone.parameters()))
            print("parameters equal one process on the whole batches:", same)
        dist.barrier()  # no process leaves while another still works (gloo aborts)
    finally:
        dist.destroy_process_group()


def devices_demo(small):
    device = pick_device()
    trees, model = setup(small, device)
    with torch.no_grad():
        logits = model.predict.batch(trees)
    print(f"device {device}: {len(trees)} trees -> logits {tuple(logits.shape)} "
          f"on {logits.device}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(small=False):
    torch.set_num_threads(1)
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this is one of the processes
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), small)
        return
    devices_demo(small)
    # started by hand: start the processes ourselves, talking over localhost
    mp.spawn(worker, args=(WORLD, small, f"tcp://127.0.0.1:{free_port()}"), nprocs=WORLD)


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:])
