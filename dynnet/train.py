"""The training loop behind `dynnet train`: epochs of shuffled, length-bucketed batches.

    task = TreeTask()
    trainer = Trainer(model, task, train, dev=dev, epochs=5, batch_size=32, out_dir="run")
    trainer.fit()                  # or trainer.fit(resume=True) to continue from run/
    trainer.evaluate(test)         # {"accuracy": ..., "examples": ...}

A task says how to train and score one kind of model: ``TreeTask`` (tree classifiers,
root accuracy) and ``SequenceTask`` (language models, perplexity).

Output directory::

    metrics.jsonl       one JSON object per epoch (loss, examples/s, dev metrics)
    checkpoint/         the model (config.json + weights.safetensors, see
                        dynnet.models.save_model) plus trainer.json and
                        trainer.safetensors: optimizer state, epoch and RNG states

The checkpoint is rewritten after every epoch, atomically (built next to the old one,
then renamed into place). Nothing is pickled: tensors go to safetensors, the rest to
JSON. The order of the batches depends only on the seed and the epoch, and the RNG
states are restored, so a run resumed from the epoch-k checkpoint ends with the same
parameters as an uninterrupted run.

Distributed: when ``torch.distributed`` is initialised (``torchrun``, see
``init_distributed``), the model runs under ``DistributedDataParallel``; every process
draws the same global batches and computes the losses of its shard
(``batch[rank::world]``). Each process's loss is the sum over its shard times
``world / len(batch)``, so DDP's gradient average equals the gradient of the mean loss
over the global batch: the same step as one process on the whole batch.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dynnet.data import BucketBatchSampler
from dynnet.errors import DynnetError
from dynnet.models.io import load_model, replace_directory, save_model
from dynnet.vocab import atomic_write_text, read_utf8

__all__ = ["CheckpointError", "SequenceTask", "Trainer", "TreeTask", "init_distributed",
           "interrupted_saves", "load_checkpoint", "recover_checkpoint", "save_checkpoint"]

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
TRAINER_JSON = "trainer.json"
TRAINER_TENSORS = "trainer.safetensors"
_FORMAT = 1


class EpochsDoneError(DynnetError, ValueError):
    """A run resumed with a total of epochs below the epochs it has trained."""


class CheckpointError(DynnetError):
    """A training checkpoint that is missing or cannot be read."""


# -------------------- tasks --------------------

class TreeTask:
    """Tree classification: ``model.loss(tree)`` to train, root accuracy to evaluate.

    The model needs ``loss`` and ``predict`` dynnet functions (see
    ``dynnet.models.tree_lstm``); trees need ``word_id`` on their leaves and a class
    index as the root label.
    """

    unit = "trees"

    def length(self, tree):
        return tree.size()

    def losses(self, model, trees, loss=None):
        """Each tree's loss; ``loss``, when given, is the function to batch in place of
        ``model.loss`` (the trainer's copy of it that reuses traces)."""
        return (loss or model.loss).batch(trees)

    def losses_of_batches(self, model, batches, workers, loss=None):
        """``losses`` of each batch in turn, traced ahead in ``workers`` worker
        processes (see ``f.batches``)."""
        return (loss or model.loss).batches(batches, workers=workers)

    @torch.no_grad()
    def evaluate(self, model, trees, batch_size=256):
        correct = 0
        for i in range(0, len(trees), batch_size):
            chunk = trees[i:i + batch_size]
            predicted = _stack(model.predict.batch(chunk)).argmax(-1).cpu()
            correct += int((predicted == torch.tensor([t.label for t in chunk])).sum())
        return {"accuracy": correct / max(len(trees), 1), "examples": len(trees)}


class SequenceTask:
    """Language modelling: ``model.loss(ids)`` (mean token NLL) to train, perplexity to
    evaluate (``exp`` of the total NLL over the total number of predicted tokens)."""

    unit = "sentences"

    def length(self, ids):
        return len(ids)

    def losses(self, model, sentences, loss=None):
        return (loss or model.loss).batch(sentences)

    def losses_of_batches(self, model, batches, workers, loss=None):
        return (loss or model.loss).batches(batches, workers=workers)

    @torch.no_grad()
    def evaluate(self, model, sentences, batch_size=256):
        total, tokens = 0.0, 0
        for i in range(0, len(sentences), batch_size):
            chunk = sentences[i:i + batch_size]
            total += float(_stack(model.token_nll.batch(chunk)).sum())
            tokens += sum(model.num_tokens(s) for s in chunk)
        nll = total / max(tokens, 1)
        return {"perplexity": math.exp(nll), "nll": nll, "tokens": tokens,
                "examples": len(sentences)}


def _stack(outputs):
    """``.batch`` returns a stacked tensor, or a list when shapes differ."""
    return outputs if isinstance(outputs, torch.Tensor) else torch.stack(list(outputs))


# -------------------- distributed --------------------

def init_distributed(device="cpu"):
    """Joins the process group that ``torchrun`` describes in the environment.

    Does nothing (returns ``(0, 1)``) unless ``WORLD_SIZE`` is above 1. Uses NCCL for
    CUDA and gloo for the CPU. Returns ``(rank, world_size)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _ShardLoss(nn.Module):
    """``forward(shard, scale)``: the summed loss of the shard times ``scale``.

    The module DDP wraps: its parameters are the model's. With ``touch_all``, a zero
    that depends on every parameter is added, so that every parameter gets a gradient
    in every step (a shard may not use all of them, e.g. only one-word trees, or be
    empty when the global batch is smaller than the number of processes): DDP then
    needs no search for unused parameters.
    """

    def __init__(self, model, task, touch_all=False, loss=None):
        super().__init__()
        self.model = model
        self.task = task
        self.touch_all = touch_all
        self.extra = {} if loss is None else {"loss": loss}  # see Trainer.reuse_traces

    def forward(self, shard, scale):
        loss = (self.task.losses(self.model, shard, **self.extra).sum() * scale if shard
                else 0.0)
        if self.touch_all:
            loss = loss + sum(p.sum() for p in self.model.parameters()) * 0.0
        return loss


# -------------------- checkpoints --------------------

def save_checkpoint(directory, model, optimizer, state):
    """Writes a training checkpoint directory atomically.

    Args:
        directory: the checkpoint directory (replaced if it exists).
        model: a registered model (saved with ``save_model``).
        optimizer: a torch optimizer; its state tensors go to safetensors, its
            hyperparameters to JSON.
        state: JSON-serialisable trainer state (epoch, settings).

    The torch (and CUDA) RNG states and Python's ``random`` state are saved too.
    """
    directory = Path(directory).absolute()
    tmp = directory.parent / f".{directory.name}.tmp-{secrets.token_hex(6)}"
    try:
        save_model(model, tmp)
        tensors, optimizer_json = _optimizer_to_save(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        save_file(tensors, str(tmp / TRAINER_TENSORS))
        with open(tmp / TRAINER_TENSORS, "rb") as f:
            os.fsync(f.fileno())
        data = {"format": _FORMAT, "state": state, "optimizer": optimizer_json,
                "python_random": _jsonable(random.getstate())}
        atomic_write_text(tmp / TRAINER_JSON, json.dumps(data, indent=1) + "\n")
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(directory, optimizer_factory, map_location=None):
    """Reads a checkpoint written by ``save_checkpoint``; restores the RNG states.

    Args:
        directory: the checkpoint directory.
        optimizer_factory: ``model -> optimizer``; the optimizer then gets the saved
            state.
        map_location: device for the model (None: the CPU).

    Returns:
        ``(model, optimizer, state)``.

    Raises:
        CheckpointError: missing or malformed trainer files (the message names the file
            and what is wrong). Everything is checked before any RNG state is set, and
            nothing on disk is changed.
        dynnet.models.ModelLoadError: the model part cannot be loaded.
    """
    directory = Path(directory)
    json_path, tensor_path = directory / TRAINER_JSON, directory / TRAINER_TENSORS
    if not json_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"{directory} is not a training checkpoint (it needs "
                              f"{TRAINER_JSON} and {TRAINER_TENSORS})")
    data = _read_trainer_json(json_path)
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{tensor_path}: cannot read the trainer tensors ({e}); the "
                              "checkpoint is damaged") from None
    rng = tensors.get("rng.torch")
    if rng is None or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise CheckpointError(f"{tensor_path}: no valid 'rng.torch' tensor (the torch RNG "
                              "state); the checkpoint is damaged")
    python_random = random.Random()
    try:
        python_random.setstate(_python_random_state(data["python_random"]))
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"{json_path}: 'python_random' is not a state of Python's "
                              "random module; the checkpoint is damaged") from None
    model = load_model(directory, map_location=map_location)
    optimizer = optimizer_factory(model)
    try:
        saved = _optimizer_from_saved(data["optimizer"], tensors)
        _check_optimizer_state(saved, optimizer)
        optimizer.load_state_dict(saved)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{json_path} and {TRAINER_TENSORS}: the optimizer state does "
                              f"not fit the model ({type(e).__name__}: {e}); the checkpoint "
                              "is damaged") from None
    torch.set_rng_state(rng)
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    random.setstate(python_random.getstate())
    return model, optimizer, data["state"]


def _read_trainer_json(path):
    """trainer.json, checked: format, state with a whole epoch, optimizer, python_random."""
    text = read_utf8(path, CheckpointError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") \
            from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a dynnet trainer state (format {_FORMAT})")
    for key, kind in (("state", dict), ("optimizer", dict), ("python_random", list)):
        if not isinstance(data.get(key), kind):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise CheckpointError(f"{path}: {key!r} must be a JSON "
                                  f"{'object' if kind is dict else 'array'}, found {found}; "
                                  "the checkpoint is damaged")
    epoch = data["state"].get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CheckpointError(f"{path}: 'state.epoch' must be the number of epochs done "
                              f"(0, 1, ...), found {epoch!r}; the checkpoint is damaged")
    optimizer = data["optimizer"]
    if not isinstance(optimizer.get("param_groups"), list) or \
            not isinstance(optimizer.get("state"), dict):
        raise CheckpointError(f"{path}: 'optimizer' needs 'param_groups' (an array) and "
                              "'state' (an object); the checkpoint is damaged")
    return data


def _check_optimizer_state(saved, optimizer):
    """Raises ValueError when a per-parameter state tensor has another shape than its
    parameter (a step would fail deep inside the optimizer)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entries in saved["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"state for parameter {index}, the model has {len(params)}")
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and \
                    value.shape != params[index].shape:
                raise ValueError(f"optimizer.{index}.{name} has shape {tuple(value.shape)}, "
                                 f"its parameter {tuple(params[index].shape)}")


def interrupted_saves(directory):
    """The folders an interrupted ``save_checkpoint`` of ``directory`` left next to it:
    the previous checkpoint renamed aside (``.NAME.old-*``) and the new one not yet
    renamed into place (``.NAME.tmp-*``)."""
    directory = Path(directory)
    if not directory.parent.is_dir():
        return []
    found = [p for pattern in (f".{directory.name}.old-*", f".{directory.name}.tmp-*")
             for p in directory.parent.glob(pattern) if p.is_dir() and not p.is_symlink()]
    return sorted(found)


def _complete_epoch(path):
    """The epoch of a complete checkpoint folder ``path``, or None."""
    from dynnet.models.io import CONFIG_FILE, WEIGHTS_FILE

    if not all((path / name).is_file()
               for name in (CONFIG_FILE, WEIGHTS_FILE, TRAINER_JSON, TRAINER_TENSORS)):
        return None
    try:
        return _read_trainer_json(path / TRAINER_JSON)["state"]["epoch"]
    except (CheckpointError, OSError):
        return None


def recover_checkpoint(directory):
    """Puts back the checkpoint that a save interrupted while swapping folders left
    aside, when ``directory`` itself is missing.

    Of the complete checkpoints among ``interrupted_saves(directory)``, the one of the
    latest epoch is renamed to ``directory`` (the new one when both are complete).

    Returns:
        ``(path it was at, epoch)``, or None when ``directory`` exists or nothing was
        left aside.

    Raises:
        CheckpointError: folders were left aside but none is a complete checkpoint.
    """
    directory = Path(directory)
    if os.path.lexists(directory):
        return None
    candidates = interrupted_saves(directory)
    if not candidates:
        return None
    complete = [(epoch, path) for path in candidates
                if (epoch := _complete_epoch(path)) is not None]
    if not complete:
        raise CheckpointError(
            f"{directory} is missing and the folders an interrupted save left "
            f"({', '.join(p.name for p in candidates)}) hold no complete checkpoint")
    # the newest epoch; between two of the same epoch, the new (tmp) one
    epoch, best = max(complete, key=lambda c: (c[0], ".tmp-" in c[1].name))
    os.rename(best, directory)
    return best, epoch


def _optimizer_to_save(state_dict):
    tensors, other = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": other}


def _optimizer_from_saved(saved, tensors):
    state = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entries in saved["state"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = []
    for group in saved["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _python_random_state(saved):
    version, internal, gauss = saved
    return version, tuple(internal), gauss


# -------------------- the trainer --------------------

def _replaying_loss(model):
    """``model.loss`` made again with ``reuse_traces=True`` and bound to ``model``, or
    None when the model's class has no dynnet function ``loss``."""
    from dynnet.api import DynFunction, function

    loss = getattr(type(model), "loss", None)
    if not isinstance(loss, DynFunction):
        return None
    return function(loss, reuse_traces=True).__get__(model)


class Trainer:
    """Trains ``model`` on ``train`` with Adam, an epoch at a time.

    Args:
        model: the model (moved to ``device``).
        task: ``TreeTask()``, ``SequenceTask()`` or an object with ``length``,
            ``losses`` and ``evaluate`` methods like them.
        train: the training examples.
        dev: examples evaluated after every epoch (None: none).
        epochs: the total number of epochs (``fit(resume=True)`` continues up to it).
        batch_size: examples per optimizer step (the global batch under torchrun).
        lr: Adam's learning rate.
        seed: seed of the batch order (with the epoch; the CLI also seeds the model's
            initialisation with it).
        out_dir: where metrics and checkpoints go; None: nowhere.
        device: "cpu", "cuda", "cuda:1", ...
        progress: a tqdm progress bar (loss and examples/s) on the first process: True,
            False, or None for one only when stderr is a terminal.
        log: ``str -> None`` for the one-line epoch summaries; None for silence.
        settings: JSON-serialisable extra state saved in checkpoints.
        workers: how many worker processes trace the next batches while this one
            trains (``f.batches``; one process, tasks with ``losses_of_batches``); 0
            traces them here.
        reuse_traces: batch a copy of the model's ``loss`` (a dynnet function) made
            with ``reuse_traces=True`` (dynnet/example_traces.py): from the second
            epoch on, the training examples replay their recorded traces. The results
            are the same bits; the trainer's examples never change, and the cache
            sees the model's ``train()`` mode and parameters. The task's ``losses``
            (and ``losses_of_batches``) then take the function as ``loss=``.
    """

    def __init__(self, model, task, train, *, dev=None, epochs=5, batch_size=32, lr=1e-3,
                 seed=0, out_dir=None, device="cpu", progress=True, log=print, settings=None,
                 workers=0, reuse_traces=False):
        if not train:
            raise ValueError("no training examples")
        if batch_size < 1 or epochs < 0:
            raise ValueError(f"need batch_size >= 1 and epochs >= 0, got {batch_size}, "
                             f"{epochs}")
        self.task = task
        self.train = list(train)
        self.dev = dev
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.log = log
        self.settings = settings or {}
        self.workers = workers
        self.reuse_traces = reuse_traces
        self.rank, self.world = _world()
        self.epoch = 0  # epochs completed
        self.sampler = BucketBatchSampler([task.length(x) for x in self.train], batch_size,
                                          shuffle=True, seed=seed)
        self._attach(model.to(self.device), self._make_optimizer(model))

    def _make_optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.lr)

    def _attach(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self._replaying = _replaying_loss(model) if self.reuse_traces else None
        self._loss = _ShardLoss(model, self.task, touch_all=self.world > 1,
                                loss=self._replaying)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._loss = DistributedDataParallel(self._loss, device_ids=ids)

    @property
    def is_main(self):
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    # -------------------- steps and epochs --------------------

    def step(self, batch):
        """One optimizer step on the global batch ``batch``; returns its mean loss.

        Under torchrun this process computes ``batch[rank::world]`` only.
        """
        shard = batch[self.rank::self.world]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(shard, self.world / len(batch))
        loss.backward()
        self.optimizer.step()
        value = loss.detach()
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            return float(value) / self.world
        return float(value)

    def _steps(self, batches):
        """The mean loss of an optimizer step on each batch of indices in turn."""
        examples = [[self.train[i] for i in indices] for indices in batches]
        planned = getattr(self.task, "losses_of_batches", None)
        if not self.workers or self.world > 1 or planned is None:
            for batch in examples:
                yield self.step(batch)
            return
        extra = {} if self._replaying is None else {"loss": self._replaying}
        for batch, losses in zip(examples, planned(self.model, examples, self.workers,
                                                   **extra)):
            self.optimizer.zero_grad(set_to_none=True)
            loss = losses.sum() / len(batch)
            loss.backward()
            self.optimizer.step()
            yield float(loss.detach())

    def train_epoch(self):
        """Runs one epoch; returns ``{"loss", "examples_per_s", "seconds"}``."""
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        batches = list(self.sampler)
        bar = None
        if self.progress is not False and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=len(self.train), unit=" " + self.task.unit[:-1], leave=False,
                       desc=f"epoch {self.epoch + 1}/{self.epochs}", dynamic_ncols=True,
                       mininterval=0.5, disable=None if self.progress is None else False)
        total, seen, start = 0.0, 0, time.perf_counter()
        try:
            for indices, loss in zip(batches, self._steps(batches)):
                total += loss * len(indices)
                seen += len(indices)
                if bar is not None:
                    bar.update(len(indices))
                    bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        self.epoch += 1
        return {"loss": total / max(seen, 1), "examples_per_s": seen / seconds,
                "seconds": seconds}

    def evaluate(self, examples, batch_size=256):
        """The task's metrics on ``examples`` (evaluation mode, no gradients)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.task.evaluate(self.model, examples, batch_size)
        finally:
            self.model.train(was_training)

    def fit(self, resume=False):
        """Trains until ``epochs`` epochs are done; returns the per-epoch metrics.

        With ``resume``, first loads the last checkpoint in ``out_dir`` (model,
        optimizer, epoch, RNG states) and drops metrics lines of later epochs.
        """
        if resume:
            self.resume()
        history = []
        while self.epoch < self.epochs:
            metrics = {"epoch": self.epoch + 1, **self.train_epoch()}
            if self.dev:
                if self.is_main:
                    metrics["dev"] = self.evaluate(self.dev)
                if self.world > 1:
                    dist.barrier()
            if self.is_main:
                if self.out_dir is not None:
                    # metrics line first: a crash before the checkpoint is written leaves
                    # a line past the checkpoint's epoch, which resume() drops; the other
                    # order would lose the line of a checkpointed epoch
                    self.record(metrics)
                    self.save()
                if self.log:
                    self.log(_summary(metrics, self.epochs, self.task.unit))
            history.append(metrics)
        return history

    # -------------------- files --------------------

    @property
    def checkpoint_dir(self):
        return None if self.out_dir is None else self.out_dir / CHECKPOINT_DIR

    def save(self):
        """Writes the checkpoint of the current epoch (first process only)."""
        if self.out_dir is None:
            raise ValueError("this Trainer has no out_dir to save to")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {"epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size,
                 "lr": self.lr, "settings": self.settings}
        save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, state)
        for stale in interrupted_saves(self.checkpoint_dir):  # of an earlier crash
            shutil.rmtree(stale, ignore_errors=True)

    def resume(self, epochs=None):
        """Loads the last checkpoint of ``out_dir`` into this trainer. ``epochs``: the
        total the run will train to; a checkpoint past it is a ValueError, raised before
        anything is changed."""
        directory = self.checkpoint_dir
        if directory is not None and self.is_main:
            recovered = recover_checkpoint(directory)
            if recovered and self.log:
                self.log(f"{directory} was missing (a save was interrupted); resuming from "
                         f"the epoch-{recovered[1]} checkpoint found at {recovered[0].name}")
        if directory is None or not directory.is_dir():
            raise CheckpointError(f"no checkpoint to resume from in {self.out_dir}")
        model, optimizer, state = load_checkpoint(directory, self._make_optimizer,
                                                  map_location=self.device)
        if epochs is not None and epochs < state["epoch"]:
            raise EpochsDoneError(f"{self.out_dir} has trained {state['epoch']} epochs already; "
                             f"give a total of {state['epoch']} or more")
        self._attach(model, optimizer)
        self.epoch = state["epoch"]
        self._warm_up()
        if self.is_main:
            self._truncate_metrics(self.epoch)

    def _warm_up(self):
        """Runs the model once over the training (and dev) examples without touching
        the RNG streams, when the model has active dropout.

        Why: dynnet captures each segment's ops on its first use (running one example
        op by op), so how the ops of a batch are grouped, and so the order in which
        dropout draws its random numbers, depends on the segments already captured.
        A resumed process starts with none, where the uninterrupted one had them all
        from the earlier epochs; capturing them first (with gradients on, as in
        training) makes the random draws of the following epochs the same.
        """
        if not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                   for m in self.model.modules()):
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.model.train()
            for i in range(0, len(self.train), 256):
                self.task.losses(self.model, self.train[i:i + 256])
            if self.dev:
                self.evaluate(self.dev)

    def record(self, metrics):
        """Appends ``metrics`` as one JSON line to ``out_dir/metrics.jsonl``."""
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")

    def _truncate_metrics(self, epoch):
        """Keeps the metrics of epochs up to ``epoch`` (a crash may have left more)."""
        path = self.out_dir / METRICS_FILE
        if not path.is_file():
            return
        kept = []
        for line in read_utf8(path, CheckpointError).splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("epoch", 0) <= epoch \
                    and "test" not in record:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _summary(metrics, epochs, unit):
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"loss {metrics['loss']:.4f}"]
    for name, value in metrics.get("dev", {}).items():
        if name not in ("examples", "tokens"):
            parts.append(f"dev {name} {value:.4f}")
    parts.append(f"{metrics['examples_per_s']:.0f} {unit}/s")
    parts.append(f"{metrics['seconds']:.1f} s")
    return "  ".join(parts)
