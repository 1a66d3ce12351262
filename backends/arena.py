"""Level-major buffers: where a round's group outputs are gathered from.

Without them, a group whose inputs were produced by several earlier groups (a
tree node's children come from every level below it) gathers them with one
index_select per source group, a cat and a permutation. Instead, before a round
executes, every output position of every group gets rows in an arena shared by
all groups whose output at that position has the same per-example shape, dtype
and device (hand-batched code's `h_buf`, `c_buf`). Each group copies its outputs
into its rows as it runs, so any later group gathers an input slot with one
index_select, however many groups produced it.

Arenas are only made for keys that at least two groups of the round write; a
value with a single producer group is read from that group's own output.

Arenas hold values only, outside autograd: writing a slice of a tensor that
requires grad would make every later write clone the whole buffer's gradient in
the backward pass (hand-batched code pays that). A gather that needs gradients is
an `ArenaGather`, whose backward hands each producer group the gradient of its
own rows (views of one zero-filled buffer spanning them).
"""

import torch


class Placement:
    """Where one group's outputs go: per output, `(arena, base)` or None."""

    __slots__ = ("slots",)

    def __init__(self, n_outputs):
        self.slots = [None] * n_outputs


def plan(groups):
    """Per group of `groups` (`(sig, nodes)` in execution order) its Placement or None."""
    counts = {}  # (aval, output position) -> rows, per key over the round
    producers = {}  # key -> number of groups writing it
    for sig, nodes in groups:
        for k, aval in enumerate(sig.out_avals):
            key = (aval, k)
            counts[key] = counts.get(key, 0) + len(nodes)
            producers[key] = producers.get(key, 0) + 1
    arenas, cursor = {}, {}
    for key, rows in counts.items():
        if producers[key] > 1:
            aval = key[0]
            arenas[key] = torch.empty((rows, *aval.shape), dtype=aval.dtype,
                                      device=aval.device)
            cursor[key] = 0
    if not arenas:
        return [None] * len(groups)
    placements = []
    for sig, nodes in groups:
        placement = None
        for k, aval in enumerate(sig.out_avals):
            arena = arenas.get((aval, k))
            if arena is None:
                continue
            if placement is None:
                placement = Placement(len(sig.out_avals))
            base = cursor[(aval, k)]
            placement.slots[k] = (arena, base)
            cursor[(aval, k)] = base + len(nodes)
        placements.append(placement)
    return placements


def store(placement, outputs):
    """Copies a group's batched outputs into its arena rows (values only)."""
    with torch.no_grad():
        for slot, value in zip(placement.slots, outputs):
            if slot is not None:
                arena, base = slot
                arena[base:base + value.shape[0]] = value


def select(arena, index, spans, sources):
    """`arena.index_select(0, index)`, differentiable towards `sources` (the producer
    groups' outputs whose rows `spans[i] = (base, rows)` of the arena hold)."""
    if torch.is_grad_enabled() and any(s.requires_grad for s in sources):
        return ArenaGather.apply(arena, index, spans, *sources)
    return arena.index_select(0, index)


class ArenaGather(torch.autograd.Function):
    """Rows of an arena; the gradient flows to the producer groups' outputs."""

    @staticmethod
    def forward(ctx, arena, index, spans, *sources):
        ctx.save_for_backward(index)
        ctx.spans = spans
        ctx.row_shape = arena.shape[1:]
        return arena.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        spans = ctx.spans
        lo = min(base for base, _ in spans)
        hi = max(base + rows for base, rows in spans)
        rows_grad = grad.new_zeros((hi - lo, *ctx.row_shape))
        rows_grad.index_add_(0, index - lo if lo else index, grad)
        return (None, None, None,
                *[rows_grad[base - lo:base - lo + rows] for base, rows in spans])
