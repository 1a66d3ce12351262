"""A loop applying one LSTM cell over a sequence, run as one fused recurrent call.

Per-example code that reads a sequence with a cell,

    for word in ids:
        h, c = self.cell(self.embed(torch.tensor(word)), (h, c))

records one segment node per step (dynnet/segments.py); scheduled level by level,
every step is a group of its own, and every group computes the cell's input
projection for its rows, then the recurrent one. Before a round is scheduled,
`fuse_recurrences` finds such chains among the pending nodes: nodes of one segment
whose code is "compute x from the step's data alone, then `nn.LSTMCell(x, (h, c))`",
each taking the state its predecessor made and nothing else reading that state. The
last node of a chain becomes one node of a "loop" signature holding every step's
data, and the others leave the round. A group of such nodes computes x for every step
of every row at once and runs the whole recurrence as one `torch.lstm` call on the
packed batch (cuDNN on a GPU), as `nn.LSTM` does.

Only rounds that record no gradients fuse (inference, `torch.no_grad()`): on the CPU,
`torch.lstm`'s backward took longer than the steps' (307 against 216 ms per 512 SST
sentences at batch 256; 284 against 339 at batch 64), and on a GPU the fused backward
has not been measured yet.

A chain stays as it is when anything else holds a state it makes (a list of every
step's `h`, an output of the example): nothing could compute those values then.
That is decided by reference counts (CPython's `sys.getrefcount`): a state that only
the next step's node refers to cannot be read by anything else.
"""

import sys

import torch
from torch import nn

from dynnet.tracing import SLOT, Signature

_LSTM_ARGS = ((SLOT, (SLOT, SLOT)), {})  # how `cell(x, (h, c))` was called


class RecurrentTemplate:
    """The fused recurrence of one segment (see the module docstring).

    Attributes:
      sig: the "loop" signature of fused nodes: inputs and outputs `(h, c)`; a node's
        payload is the list of its steps' data tuples, in order.
      cell: the `nn.LSTMCell` (its parameters are read when a group runs).
      ops: the segment's ops (what `dynnet.profile().groups_of` looks in).
      inputs: the SegmentTemplate of the steps' ops before the cell, which computes the
        cell's input `x` from a step's data alone.
    """

    def __init__(self, segment, cell, inputs):
        self.cell = cell
        self.inputs = inputs
        self.ops = segment.ops
        seg_sig = segment.sig
        self.sig = Signature("loop", self, f"LSTMCell over a sequence ({seg_sig.name})",
                             None, seg_sig.in_avals, seg_sig.origin)
        self.sig.grad_enabled = seg_sig.grad_enabled
        self.sig.out_avals = seg_sig.out_avals

    def run_batched(self, inputs, size, data=None):
        """Final `[h, c]` of `size` rows: initial states `inputs`, steps `data`."""
        h0, c0 = inputs
        lengths = [len(steps) for steps in data]
        order = sorted(range(size), key=lengths.__getitem__, reverse=True)
        batch_sizes, packed = [], []  # time-major, longest rows first (PackedSequence)
        for t in range(lengths[order[0]]):
            active = [i for i in order if lengths[i] > t]
            batch_sizes.append(len(active))
            packed += [data[i][t] for i in active]
        x = self.inputs.run_batched([], len(packed), packed)[0]
        rows = torch.tensor(order, device=h0.device)
        cell = self.cell
        params = [cell.weight_ih, cell.weight_hh]
        if cell.bias:
            params += [cell.bias_ih, cell.bias_hh]
        hx = (h0.index_select(0, rows).unsqueeze(0), c0.index_select(0, rows).unsqueeze(0))
        _, h, c = torch.lstm(x, torch.tensor(batch_sizes), hx, params, cell.bias, 1, 0.0,
                             torch.is_grad_enabled(), False)
        back = torch.empty_like(rows)
        back[rows] = torch.arange(size, device=rows.device)
        return [h[0].index_select(0, back), c[0].index_select(0, back)]

    def __call__(self, h, c, data=()):
        """One example (used to locate a failing example)."""
        outs = self.run_batched([h.unsqueeze(0), c.unsqueeze(0)], 1, [data])
        return tuple(o[0] for o in outs)


_NOT_FUSABLE = object()


def recurrence_of(segment):
    """The `RecurrentTemplate` of SegmentTemplate `segment`, or None when its code is
    not "x from data alone, then an nn.LSTMCell on (x, (h, c))" (cached)."""
    found = segment.__dict__.get("_recurrence")
    if found is None:
        found = segment._recurrence = _recurrence(segment) or _NOT_FUSABLE
    return None if found is _NOT_FUSABLE else found


def _recurrence(segment):
    from dynnet.segments import SegmentTemplate

    ops = segment.ops
    if len(segment.sig.in_avals) != 2 or len(ops) < 2:
        return None
    sig, _, refs = ops[-1]
    last = len(ops) - 1
    if sig.kind != "op" or type(sig.fn) is not nn.LSTMCell or sig.template != _LSTM_ARGS \
            or tuple(refs[1:]) != ((-1, 0), (-1, 1)) or refs[0][0] < 0:
        return None
    if segment.outputs != [("ref", (last, 0)), ("ref", (last, 1))]:
        return None
    if any(ref[0] < 0 for _, _, op_refs in ops[:-1] for ref in op_refs):
        return None  # x depends on the state
    inputs = SegmentTemplate(f"{segment.sig.name} input", (), ops[:-1], [("ref", refs[0])],
                             segment.sig.origin)
    return RecurrentTemplate(segment, sig.fn, inputs)


def fuse_recurrences(pending):
    """`pending` with each chain of two or more steps of a fusable segment replaced by
    one node of its recurrence (see the module docstring); the same list when none."""
    chains = []
    tails = {}  # id of a chain's last node so far -> the chain's nodes
    grad = torch.is_grad_enabled()
    for node in pending:
        sig = node.sig
        if sig.kind != "segment" or (grad and sig.grad_enabled) or recurrence_of(sig.fn) is None:
            continue
        inputs = node.inputs
        previous = inputs[0].node
        chain = tails.pop(id(previous), None)
        # The previous step's state must be (h, c) of a node of this segment, held by
        # this node alone: its `inputs` and the call's argument are the two references.
        if chain is None or previous.sig is not sig or inputs[1].node is not previous \
                or inputs[0].index != 0 or inputs[1].index != 1 \
                or sys.getrefcount(inputs[0]) != 2 or sys.getrefcount(inputs[1]) != 2:
            chain = []
            chains.append(chain)
        chain.append(node)
        tails[id(node)] = chain
    chains = [chain for chain in chains if len(chain) > 1]
    if not chains:
        return pending
    gone = set()
    for chain in chains:
        first, tail = chain[0], chain[-1]
        steps = [node.payload for node in chain]
        tail.sig = recurrence_of(first.sig.fn).sig
        tail.inputs = first.inputs
        tail.payload = steps
        tail.depth = first.depth
        gone.update(id(node) for node in chain[:-1])
    return [node for node in pending if id(node) not in gone]
