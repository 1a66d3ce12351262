"""Shared helpers of the benchmarks: data, word ids, random trees, clocks, dynnet lookup."""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

import torch

try:
    from dynnet.data import Tree, read_sentences, read_trees
    DATA_READER = "dynnet.data"
except Exception as _error:  # a half-built dynnet must not stop the baselines
    from benchmarks._fallback_data import Tree, read_sentences, read_trees
    DATA_READER = f"benchmarks fallback reader (import dynnet.data failed: {_error})"

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNK = "<unk>"
EOS = "<eos>"


# -------------------- what a benchmark is --------------------

class Variant(NamedTuple):
    """One way to compute a benchmark's model.

    Attributes:
        loss_and_grad: ``(module, batch) -> loss``; adds the gradients of the batch loss
            (a mean over the batch) to the parameters' ``.grad`` and returns the loss.
        infer: ``(module, batch) -> outputs``, under ``torch.no_grad``.
        build: ``start -> module``; makes this variant's own copy of the starting
            parameters (same initial state for every variant).
    """

    loss_and_grad: Callable
    infer: Callable
    build: Callable = copy.deepcopy


class Benchmark(NamedTuple):
    """A model, its data and its variants, as the runner needs them.

    Attributes:
        name: short name for the table.
        unit: what one example is ("trees", "sentences", "vectors").
        examples: the examples every variant runs on, in order.
        batch_sizes: the batch sizes to measure.
        start: the starting parameters (an ``nn.Module``) every variant copies.
        variants: name -> ``Variant``, or name -> str saying why it is unavailable.
        make_optimizer: ``module -> optimizer``; None when training is forward and
            backward only (no update).
        labels: variant name -> what the table calls it.
    """

    name: str
    unit: str
    examples: list
    batch_sizes: list
    start: torch.nn.Module
    variants: dict
    make_optimizer: Callable | None
    labels: dict


def train_step(variant, module, optimizer, batch):
    """Zero the gradients, compute loss and gradients, update (if any); returns the loss."""
    if optimizer is None:
        module.zero_grad(set_to_none=True)
        return variant.loss_and_grad(module, batch)
    optimizer.zero_grad(set_to_none=True)
    loss = variant.loss_and_grad(module, batch)
    optimizer.step()
    return loss


# -------------------- data --------------------

def build_vocab(words, max_size=None, specials=(UNK,)):
    """Maps words to ids, most frequent first, after ``specials``.

    Args:
        words: an iterable of word strings.
        max_size: the most ids to hand out (specials included); None for all words.
        specials: words that get the first ids whatever their counts.

    Returns:
        A dict word -> id.
    """
    vocab = {w: i for i, w in enumerate(specials)}
    for word, _ in Counter(words).most_common():
        if max_size is not None and len(vocab) >= max_size:
            break
        vocab.setdefault(word, len(vocab))
    return vocab


def index_trees(trees, vocab):
    """Sets ``word_id`` on every leaf of every tree (unknown words get ``vocab[UNK]``)."""
    unk = vocab[UNK]
    for tree in trees:
        for node in tree.nodes():
            if node.is_leaf:
                node.word_id = vocab.get(node.word, unk)
    return trees


def load_sst(n_trees, split="train", data_dir=DATA_DIR):
    """Reads the first ``n_trees`` SST trees and gives their leaves word ids.

    Returns:
        ``(trees, vocab)``; the vocabulary covers the words of the trees read.
    """
    trees = read_trees(Path(data_dir) / "sst" / f"{split}.txt")[:n_trees]
    vocab = build_vocab(w for t in trees for w in t.leaves())
    return index_trees(trees, vocab), vocab


def load_ptb(n_sentences, vocab_size=10_000, data_dir=DATA_DIR):
    """Reads PTB valid as id lists framed by ``<eos>``: ``[eos, w1, ..., wn, eos]``.

    The vocabulary (at most ``vocab_size`` ids) is built from all of PTB valid; the
    first ``n_sentences`` sentences are returned.

    Returns:
        ``(sentences, vocab)``.
    """
    sentences = read_sentences(Path(data_dir) / "ptb" / "valid.txt")
    vocab = build_vocab((w for s in sentences for w in s), vocab_size, specials=(UNK, EOS))
    unk, eos = vocab[UNK], vocab[EOS]
    ids = [[eos] + [vocab.get(w, unk) for w in s] + [eos] for s in sentences[:n_sentences]]
    return ids, vocab


def random_tree(rng, vocab_size, n_leaves):
    """A random binary ``Tree`` with ``n_leaves`` leaves, labels 0-4, word ids set."""
    nodes = []
    for _ in range(n_leaves):
        leaf = Tree(rng.randrange(5), word=f"w{rng.randrange(vocab_size)}")
        leaf.word_id = int(leaf.word[1:])
        nodes.append(leaf)
    while len(nodes) > 1:
        i = rng.randrange(len(nodes) - 1)
        nodes[i:i + 2] = [Tree(rng.randrange(5), [nodes[i], nodes[i + 1]])]
    return nodes[0]


def random_trees(n, vocab_size, max_leaves=12, seed=0):
    """``n`` random binary trees (see ``random_tree``), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [random_tree(rng, vocab_size, rng.randint(1, max_leaves)) for _ in range(n)]


def batches(items, size):
    """Cuts ``items`` into consecutive lists of at most ``size`` items."""
    return [items[i:i + size] for i in range(0, len(items), size)]


# -------------------- clocks --------------------

def synchronize(device):
    """Waits for queued device work, so that a clock read after it is meaningful."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # set to time.process_time by ``run.py --clock process``


def time_call(fn, device):
    """Runs ``fn()`` and returns the seconds it took, device work included. Garbage
    left by earlier work (the profiler's event trees of ``cpu_peak_bytes`` hold
    millions of cyclic objects) is collected first, so that its collection does not
    land inside the timed call."""
    gc.collect()
    synchronize(device)
    start = CLOCK()
    fn()
    synchronize(device)
    return CLOCK() - start


def cpu_peak_bytes(fn):
    """Runs ``fn()`` and returns the most CPU memory its tensors held at once, in bytes,
    above what was allocated when it started (tracked op by op by the torch profiler,
    so a peak inside one op is not seen; memory freed before the end still counts)."""
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced():  # the profiler's C++ side logs two lines per session
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    held = peak = 0
    top = [e for e in prof.events() if e.cpu_parent is None]
    for event in sorted(top, key=lambda e: e.time_range.start):
        held += event.cpu_memory_usage  # net bytes allocated by the op and its children
        peak = max(peak, held)
    return peak


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 goes to /dev/null inside (C++ libraries write to it directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def median(values):
    """The median of a non-empty list of numbers."""
    return statistics.median(values)


# -------------------- dynnet --------------------

def load_dynnet_module(name):
    """Imports ``benchmarks.<name>`` (a module that needs dynnet) without failing.

    Returns:
        ``(module, None)`` when it imports, else ``(None, reason)`` where reason is a
        one-line description of the failure.
    """
    import importlib

    try:
        return importlib.import_module(f"benchmarks.{name}"), None
    except Exception as error:  # anything a half-built dynnet may raise
        return None, describe_error(error)


def dynnet_variant(name):
    """``benchmarks.dynnet_models.<name>``, or a str saying why it is unavailable."""
    module, reason = load_dynnet_module("dynnet_models")
    return reason if module is None else getattr(module, name)


def describe_error(error):
    """``"Type: first line of message"`` for reports."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
