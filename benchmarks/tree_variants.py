"""The SST tree-LSTM written several natural ways: does each run as fast as the plain one?

    python -m benchmarks.tree_variants [--trees N] [--batch-size B] [--repeats K]

Every variant computes the same function from the same weights (checked: equal losses);
they differ only in how the per-tree code is written. A variant that falls off dynnet's
fast path records more nodes per tree node (some of its code runs op by op instead of
as one segment) or makes more groups; the table shows both, and training throughput
relative to the plain form (process CPU time, one thread, best of the repeats).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import dynnet
from benchmarks import common
from benchmarks.dynnet_models import DynTreeLSTM
from benchmarks.tree_lstm import TreeLSTMParams


def _leaf(m, tree):
    device = m.out.weight.device
    x = m.embed(torch.tensor(tree.word_id, device=device))
    i, o, u = torch.chunk(m.leaf(x), 3)
    c = torch.sigmoid(i) * torch.tanh(u)
    return torch.sigmoid(o) * torch.tanh(c), c


class ListOfStates(DynTreeLSTM):
    """The children's states kept in a list, read by index and by a comprehension."""

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            return _leaf(self, tree)
        states = [self.encode(child) for child in tree.children]
        gates = self.internal(torch.cat([h for h, _ in states]))
        i, fl, fr, o, u = torch.chunk(gates, 5)
        c = (torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * states[0][1]
             + torch.sigmoid(fr) * states[1][1])
        return torch.sigmoid(o) * torch.tanh(c), c


class SumOfForgetGates(DynTreeLSTM):
    """The forget terms summed over the children with `sum` and `zip`."""

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            return _leaf(self, tree)
        states = [self.encode(child) for child in tree.children]
        i, fl, fr, o, u = torch.chunk(self.internal(torch.cat([h for h, _ in states])), 5)
        kept = sum(torch.sigmoid(f) * c for f, (_, c) in zip([fl, fr], states))
        c = torch.sigmoid(i) * torch.tanh(u) + kept
        return torch.sigmoid(o) * torch.tanh(c), c


class ModulesByName(DynTreeLSTM):
    """The layers looked up in an `nn.ModuleDict`, the cell in a helper method."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layers = nn.ModuleDict({"leaf": self.leaf, "internal": self.internal})

    def cell(self, hl, cl, hr, cr):
        gates = self.layers["internal"](torch.cat([hl, hr]))
        i, fl, fr, o, u = torch.chunk(gates, 5)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + torch.sigmoid(fr) * cr
        return torch.sigmoid(o) * torch.tanh(c), c

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            device = self.out.weight.device
            x = self.embed(torch.tensor(tree.word_id, device=device))
            i, o, u = torch.chunk(self.layers["leaf"](x), 3)
            c = torch.sigmoid(i) * torch.tanh(u)
            return torch.sigmoid(o) * torch.tanh(c), c
        left, right = tree.children
        hl, cl = self.encode(left)
        hr, cr = self.encode(right)
        return self.cell(hl, cl, hr, cr)


VARIANTS = {  # name -> model class; Plain is the benchmark's own form (dynnet_models.py)
    "Plain": DynTreeLSTM, "ListOfStates": ListOfStates, "SumOfForgetGates": SumOfForgetGates,
    "ModulesByName": ModulesByName}


def _train_pass(model, batches):
    for batch in batches:
        model.zero_grad(set_to_none=True)
        labels = torch.tensor([t.label for t in batch])
        h = model.encode.batch(batch)[0]
        F.cross_entropy(model.out(h), labels).backward()


def measure(trees, batch_size, repeats):
    """Rows `(name, nodes per tree node, groups per pass, trees/s, first-batch loss)`."""
    batches = common.batches(trees, batch_size)
    tree_nodes = sum(len(list(t.nodes())) for t in trees)
    start = TreeLSTMParams(1 + max(n.word_id for t in trees for n in t.nodes() if n.is_leaf))
    rows = []
    for name, cls in VARIANTS.items():
        model = cls(**start.config)
        model.load_state_dict(start.state_dict(), strict=False)
        _train_pass(model, batches[:1])  # capture the segments
        with torch.no_grad():
            first = batches[0]
            loss = F.cross_entropy(model.out(model.encode.batch(first)[0]),
                                   torch.tensor([t.label for t in first]))
        with dynnet.profile() as prof:
            _train_pass(model, batches)
        best = min(_timed(lambda: _train_pass(model, batches)) for _ in range(repeats))
        rows.append((name, prof.nodes / tree_nodes, prof.groups, len(trees) / best,
                     float(loss)))
    return rows


def _timed(fn):
    start = time.process_time()
    fn()
    return time.process_time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tree_variants",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(common.DATA_DIR))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trees, _ = common.load_sst(args.trees, data_dir=args.data)
    rows = measure(trees, args.batch_size, args.repeats)
    plain = rows[0][3]
    print(f"tree-LSTM variants, {args.trees} SST trees, batch {args.batch_size}, "
          f"process CPU time, best of {args.repeats}")
    print("| variant | nodes per tree node | groups per pass | train trees/s | vs plain | loss@0 |")
    print("|---|---|---|---|---|---|")
    for name, nodes, groups, speed, loss in rows:
        print(f"| {name} | {nodes:.2f} | {groups} | {speed:.0f} | {speed / plain:.2f} | "
              f"{loss:.4f} |")


if __name__ == "__main__":
    main()
