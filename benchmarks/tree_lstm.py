"""SST binary (N-ary) tree-LSTM, Tai et al. 2015, written three ways in plain PyTorch.

All variants compute the same function from the same ``TreeLSTMParams``: a 5-class
cross-entropy on the root, averaged over the trees of a batch.

- ``naive``: recursive per-tree forward with inline torch ops, one backward per batch.
- ``batched``: the expert's level-wise batching with autograd. A per-batch plan puts the
  nodes in a level-major buffer (leaves first, then nodes of height 1, 2, ...); leaves
  run in one call, each level in one call on children gathered with ``index_select``.
- ``manual``: the same forward without autograd, keeping the activations, and a
  hand-written backward, level by level, into the parameters' ``.grad``.

Each variant is a ``Variant(loss_and_grad, infer)``: ``loss_and_grad(params, trees)``
adds the gradients of the batch loss to ``.grad`` and returns the loss (a 0-d tensor);
``infer(params, trees)`` returns root logits ``[B, 5]`` under ``torch.no_grad``.
The dynnet version lives in ``benchmarks.dynnet_models``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import DATA_DIR, Benchmark, Variant, dynnet_variant, load_sst

DIM = 128
CLASSES = 5


class TreeLSTMParams(nn.Module):
    """The parameters every variant shares.

    leaf:     gates i, o, u = leaf(embed(w));  c = σ(i)·tanh(u);  h = σ(o)·tanh(c)
    internal: gates i, f_l, f_r, o, u = internal([h_l; h_r]);
              c = σ(i)·tanh(u) + σ(f_l)·c_l + σ(f_r)·c_r;  h = σ(o)·tanh(c)
    root:     logits = out(h)
    """

    def __init__(self, vocab_size, dim=DIM):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim}
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.leaf = nn.Linear(dim, 3 * dim)
        self.internal = nn.Linear(2 * dim, 5 * dim)
        self.out = nn.Linear(dim, CLASSES)


def make_optimizer(params):
    """The optimizer every variant trains with."""
    return torch.optim.Adam(params.parameters(), lr=0.05)


# -------------------- naive: one tree at a time --------------------

def _naive_encode(p, tree, device):
    if tree.is_leaf:
        x = p.embed(torch.tensor(tree.word_id, device=device))
        i, o, u = torch.chunk(p.leaf(x), 3)
        c = torch.sigmoid(i) * torch.tanh(u)
        return torch.sigmoid(o) * torch.tanh(c), c
    (hl, cl), (hr, cr) = [_naive_encode(p, child, device) for child in tree.children]
    i, fl, fr, o, u = torch.chunk(p.internal(torch.cat([hl, hr])), 5)
    c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + torch.sigmoid(fr) * cr
    return torch.sigmoid(o) * torch.tanh(c), c


def _naive_logits(p, trees):
    device = p.out.weight.device
    return torch.stack([p.out(_naive_encode(p, t, device)[0]) for t in trees])


def _naive_loss_and_grad(p, trees):
    device = p.out.weight.device
    losses = [F.cross_entropy(logits, torch.tensor(t.label, device=device))
              for logits, t in zip(_naive_logits(p, trees), trees)]
    loss = torch.stack(losses).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _naive_infer(p, trees):
    return _naive_logits(p, trees)


NAIVE = Variant(_naive_loss_and_grad, _naive_infer)


# -------------------- the per-batch plan --------------------

class Plan(NamedTuple):
    """Where every node of a batch lives in the level-major buffer.

    Rows ``[0, n_leaves)`` hold the leaves; level k (k >= 1) holds the nodes of height k
    in rows ``bounds[k-1]:bounds[k]``, and ``children[k-1]`` lists their children's rows
    interleaved ``[l0, r0, l1, r1, ...]``.
    """

    n_nodes: int
    word_ids: torch.Tensor
    bounds: list
    children: list
    roots: torch.Tensor
    labels: torch.Tensor


def build_plan(trees, device):
    """Sorts the nodes of ``trees`` by height and builds the gather indices."""
    leaves, levels = [], []  # levels[k-1]: nodes of height k
    height = {}
    for tree in trees:
        for node in tree.nodes():  # post-order: children first
            if node.is_leaf:
                height[node] = 0
                leaves.append(node)
                continue
            left, right = node.children
            h = max(height[left], height[right]) + 1
            height[node] = h
            if h > len(levels):
                levels.append([])
            levels[h - 1].append(node)
    row = {node: i for i, node in enumerate(leaves)}
    bounds, flat = [len(leaves)], []
    for level in levels:
        start = bounds[-1]
        for j, node in enumerate(level):
            row[node] = start + j
            left, right = node.children
            flat.append(row[left])
            flat.append(row[right])
        bounds.append(start + len(level))
    # One host-to-device copy for all indices; the fields are slices of it.
    n_child, n_leaves, n_trees = len(flat), len(leaves), len(trees)
    flat += [leaf.word_id for leaf in leaves]
    flat += [row[t] for t in trees]
    flat += [t.label for t in trees]
    packed = torch.tensor(flat, device=device)
    children = [packed[2 * (a - n_leaves):2 * (b - n_leaves)]
                for a, b in zip(bounds, bounds[1:])]
    return Plan(
        n_nodes=bounds[-1],
        word_ids=packed[n_child:n_child + n_leaves],
        bounds=bounds,
        children=children,
        roots=packed[n_child + n_leaves:n_child + n_leaves + n_trees],
        labels=packed[n_child + n_leaves + n_trees:],
    )


# -------------------- batched: level-wise with autograd --------------------

def _batched_root_h(p, plan):
    dim = p.dim
    x = p.embed(plan.word_ids)
    i, o, u = p.leaf(x).chunk(3, dim=1)
    c = torch.sigmoid(i) * torch.tanh(u)
    h = torch.sigmoid(o) * torch.tanh(c)
    h_buf = h.new_zeros(plan.n_nodes, dim)
    c_buf = h.new_zeros(plan.n_nodes, dim)
    h_buf[:plan.bounds[0]] = h
    c_buf[:plan.bounds[0]] = c
    for k, idx in enumerate(plan.children):
        start, stop = plan.bounds[k], plan.bounds[k + 1]
        m = stop - start
        hlr = h_buf.index_select(0, idx).view(m, 2 * dim)
        clr = c_buf.index_select(0, idx).view(m, 2, dim)
        i, fl, fr, o, u = p.internal(hlr).chunk(5, dim=1)
        c = (torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * clr[:, 0]
             + torch.sigmoid(fr) * clr[:, 1])
        h_buf[start:stop] = torch.sigmoid(o) * torch.tanh(c)
        c_buf[start:stop] = c
    return h_buf.index_select(0, plan.roots)


def _batched_loss_and_grad(p, trees):
    plan = build_plan(trees, p.out.weight.device)
    loss = F.cross_entropy(p.out(_batched_root_h(p, plan)), plan.labels)
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _batched_infer(p, trees):
    return p.out(_batched_root_h(p, build_plan(trees, p.out.weight.device)))


BATCHED = Variant(_batched_loss_and_grad, _batched_infer)


# -------------------- manual: level-wise with a hand-written backward --------------------

def _leaf_forward(p, word_ids):
    x = p.embed.weight.index_select(0, word_ids)
    si, so, tu = torch.addmm(p.leaf.bias, x, p.leaf.weight.t()).chunk(3, dim=1)
    si, so, tu = torch.sigmoid(si), torch.sigmoid(so), torch.tanh(tu)
    c = si * tu
    tc = torch.tanh(c)
    return so * tc, c, (x, si, so, tu, tc)


def _internal_forward(p, hlr, clr):
    gates = torch.addmm(p.internal.bias, hlr, p.internal.weight.t())
    si, sfl, sfr, so, tu = gates.chunk(5, dim=1)
    si, sfl, sfr, so, tu = (torch.sigmoid(si), torch.sigmoid(sfl), torch.sigmoid(sfr),
                            torch.sigmoid(so), torch.tanh(tu))
    cl, cr = clr[:, 0], clr[:, 1]
    c = si * tu + sfl * cl + sfr * cr
    tc = torch.tanh(c)
    return so * tc, c, (hlr, si, sfl, sfr, so, tu, cl, cr, tc)


@torch.no_grad()
def _manual_forward(p, plan):
    """Forward pass keeping what the backward needs; returns (h_buf, c_buf, saved)."""
    dim = p.dim
    h, c, leaf_saved = _leaf_forward(p, plan.word_ids)
    h_buf = h.new_empty(plan.n_nodes, dim)
    c_buf = h.new_empty(plan.n_nodes, dim)
    h_buf[:plan.bounds[0]] = h
    c_buf[:plan.bounds[0]] = c
    saved = [leaf_saved]
    for k, idx in enumerate(plan.children):
        start, stop = plan.bounds[k], plan.bounds[k + 1]
        m = stop - start
        hlr = h_buf.index_select(0, idx).view(m, 2 * dim)
        clr = c_buf.index_select(0, idx).view(m, 2, dim)
        h_buf[start:stop], c_buf[start:stop], level_saved = _internal_forward(p, hlr, clr)
        saved.append(level_saved)
    return h_buf, c_buf, saved


def _accumulate(param, grad):
    if param.grad is None:
        param.grad = grad
    else:
        param.grad += grad


@torch.no_grad()
def _manual_loss_and_grad(p, trees):
    plan = build_plan(trees, p.out.weight.device)
    h_buf, _, saved = _manual_forward(p, plan)
    dim, n_trees = p.dim, len(trees)

    # Root: logits = out(h), loss = mean cross-entropy.
    h_root = h_buf.index_select(0, plan.roots)
    logits = torch.addmm(p.out.bias, h_root, p.out.weight.t())
    loss = F.cross_entropy(logits, plan.labels)
    d_logits = torch.softmax(logits, dim=1)
    d_logits[torch.arange(n_trees, device=logits.device), plan.labels] -= 1
    d_logits /= n_trees
    _accumulate(p.out.weight, d_logits.t() @ h_root)
    _accumulate(p.out.bias, d_logits.sum(0))
    dh_buf = torch.zeros_like(h_buf)
    dc_buf = torch.zeros_like(h_buf)
    dh_buf.index_add_(0, plan.roots, d_logits @ p.out.weight)

    # Internal levels, top down; each child has one parent, so index_add_ never collides.
    d_w = torch.zeros_like(p.internal.weight)
    d_b = torch.zeros_like(p.internal.bias)
    for k in range(len(plan.children) - 1, -1, -1):
        start, stop = plan.bounds[k], plan.bounds[k + 1]
        hlr, si, sfl, sfr, so, tu, cl, cr, tc = saved[k + 1]
        dh, dc = dh_buf[start:stop], dc_buf[start:stop]
        d_o = dh * tc * so * (1 - so)
        dc = dc + dh * so * (1 - tc * tc)
        d_gates = torch.cat([dc * tu * si * (1 - si), dc * cl * sfl * (1 - sfl),
                             dc * cr * sfr * (1 - sfr), d_o, dc * si * (1 - tu * tu)], dim=1)
        d_w.addmm_(d_gates.t(), hlr)
        d_b += d_gates.sum(0)
        idx = plan.children[k]
        dh_buf.index_add_(0, idx, (d_gates @ p.internal.weight).view(-1, dim))
        dc_buf.index_add_(0, idx, torch.stack([dc * sfl, dc * sfr], dim=1).view(-1, dim))
    _accumulate(p.internal.weight, d_w)
    _accumulate(p.internal.bias, d_b)

    # Leaves.
    x, si, so, tu, tc = saved[0]
    n_leaves = plan.bounds[0]
    dh, dc = dh_buf[:n_leaves], dc_buf[:n_leaves]
    dc = dc + dh * so * (1 - tc * tc)
    d_gates = torch.cat([dc * tu * si * (1 - si), dh * tc * so * (1 - so),
                         dc * si * (1 - tu * tu)], dim=1)
    _accumulate(p.leaf.weight, d_gates.t() @ x)
    _accumulate(p.leaf.bias, d_gates.sum(0))
    d_embed = torch.zeros_like(p.embed.weight)
    d_embed.index_add_(0, plan.word_ids, d_gates @ p.leaf.weight)
    _accumulate(p.embed.weight, d_embed)
    return loss


@torch.no_grad()
def _manual_infer(p, trees):
    plan = build_plan(trees, p.out.weight.device)
    h_buf, _, _ = _manual_forward(p, plan)
    return p.out(h_buf.index_select(0, plan.roots))


MANUAL = Variant(_manual_loss_and_grad, _manual_infer)

BASELINES = {"naive": NAIVE, "batched": BATCHED, "manual": MANUAL}

LABELS = {"naive": "naive per-tree", "batched": "hand-batched autograd",
          "manual": "hand-written backward", "dynnet": "dynnet",
          "dynnet-replay": "dynnet, reused traces",
          "dynnet-reshuffled": "dynnet, reused traces, new batches"}


def benchmark(n_trees, batch_sizes, device, data_dir=DATA_DIR):
    """The SST tree-LSTM on the first ``n_trees`` training trees."""
    trees, vocab = load_sst(n_trees, data_dir=data_dir)
    torch.manual_seed(0)
    start = TreeLSTMParams(len(vocab)).to(device)
    variants = {**BASELINES, "dynnet": dynnet_variant("TREE_LSTM"),
                "dynnet-replay": dynnet_variant("TREE_LSTM_REPLAYED"),
                "dynnet-reshuffled": dynnet_variant("TREE_LSTM_RESHUFFLED")}
    return Benchmark("tree-lstm", "trees", trees, batch_sizes, start, variants,
                     make_optimizer, LABELS)
