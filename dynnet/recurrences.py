"""A loop applying one recurrent cell over a sequence, run as one fused call.

Per-example code that reads a sequence with a cell,

    for word in ids:
        h, c = self.cell(self.embed(torch.tensor(word)), (h, c))

records one segment node per step (dynnet/segments.py); scheduled level by level,
every step is a group of its own, and every group computes the cell's input
projection for its rows, then the recurrent one. Before a round is scheduled,
`fuse_recurrences` finds such chains among the pending nodes: nodes of one segment
whose code is "compute x from the step's data alone, then `cell(x, state)`" for an
`nn.LSTMCell` (state `(h, c)`), `nn.GRUCell` or `nn.RNNCell` (state `h`), possibly
followed by a sum over the steps, `total = total + f(h, data)` (a language model's
loss: see `RecurrentTemplate.term`), each taking the state its predecessor made and
nothing else reading that state. The last node of
a chain becomes one node of a "loop" signature holding every step's data, and the
others leave the round. A group of such nodes computes x for every step of every row
at once, then runs the whole recurrence on the packed batch, as `nn.LSTM` does.

Without gradients (inference, `torch.no_grad()`) that is one `torch.lstm` (`torch.gru`,
`torch.rnn_tanh`, `torch.rnn_relu`) call. With gradients, `torch.lstm`'s backward on
the CPU took longer than the steps' (307 against 216 ms per 512 SST sentences at batch
256), so a group on the CPU runs `_cell_loop` (torch ops per step, the input products
of all steps in one call: 194 ms). On a GPU, cuDNN's RNNs compute in the precision
that `torch.backends.cudnn.rnn` sets (TF32 by default) where the user's cell steps use
that of `torch.backends.cuda.matmul` (full float32 by default); the forward call is
made in the matmul's precision (`_cell_precision`), but the backward runs after the
call, so with gradients a GPU group runs `torch.lstm` only when TF32 is allowed for
matrix products, and `_cell_loop` otherwise.

A chain stays as it is when anything else holds a state it makes (a list of every
step's `h`, an output of the example): nothing could compute those values then.
That is decided by reference counts (CPython's `sys.getrefcount`): a state that only
the next step's node refers to cannot be read by anything else.
"""

import contextlib
import operator
import sys
import warnings

import torch
from torch import nn

from dynnet.backends.gather import index_tensor
from dynnet.tracing import SLOT, Signature

_CELLS = {  # cell class -> how it was called, its states, the fused call
    nn.LSTMCell: (((SLOT, (SLOT, SLOT)), {}), 2, lambda cell: torch.lstm),
    nn.GRUCell: (((SLOT, SLOT), {}), 1, lambda cell: torch.gru),
    nn.RNNCell: (((SLOT, SLOT), {}), 1,
                 lambda cell: torch.rnn_tanh if cell.nonlinearity == "tanh" else torch.rnn_relu),
}


class RecurrentTemplate:
    """The fused recurrence of one segment (see the module docstring).

    Attributes:
      sig: the "loop" signature of fused nodes: inputs and outputs the state (`(h, c)`
        of an LSTM, `h` of a GRU or RNN cell); a node's payload is the list of its
        steps' data tuples, in order.
      cell: the `nn.LSTMCell`, `nn.GRUCell` or `nn.RNNCell` (its parameters are read
        when a group runs).
      ops: the segment's ops (what `dynnet.profile().groups_of` looks in).
      inputs: the SegmentTemplate of the steps' ops before the cell, which computes the
        cell's input `x` from a step's data alone.
      term: None, or for a loop that also accumulates `total = total + f(h, data)` (a
        loss per step: `total` is the last input and output), the SegmentTemplate of
        `f` on a step's new `h` and data. Then `f` runs after the recurrence, one call
        per step for all rows, and each row's terms are summed into its `total`. (One
        call over all steps was slower on the CPU: the language model's logits for
        every word of a batch, 25-150 MB, leave the cache; per step they stay.)
    """

    def __init__(self, segment, cell, inputs, term=None):
        self.cell = cell
        self.inputs = inputs
        self.term = term
        self.ops = segment.ops
        seg_sig = segment.sig
        self.sig = Signature("loop", self, f"{type(cell).__name__} over a sequence "
                             f"({seg_sig.name})", None, seg_sig.in_avals, seg_sig.origin)
        self.sig.grad_enabled = seg_sig.grad_enabled
        self.sig.out_avals = seg_sig.out_avals

    def run_batched(self, inputs, size, data=None):
        """The final state of `size` rows: initial state `inputs`, steps `data`."""
        lengths = [len(steps) for steps in data]
        order = sorted(range(size), key=lengths.__getitem__, reverse=True)
        batch_sizes, packed = [], []  # time-major, longest rows first (PackedSequence)
        for t in range(lengths[order[0]]):
            active = [i for i in order if lengths[i] > t]
            batch_sizes.append(len(active))
            packed += [data[i][t] for i in active]
        x = self.inputs.run_batched([], len(packed), packed)[0]
        rows = index_tensor(order, x.device)
        cell = self.cell
        state = [s.index_select(0, rows) for s in inputs]
        if self.term is not None:
            total = state.pop()
        grad = torch.is_grad_enabled()
        if grad and (x.device.type == "cpu" or not _tf32_products()):
            hs, final = _cell_loop(x, batch_sizes, state, cell, self.term is not None)
        else:
            params = [cell.weight_ih, cell.weight_hh]
            if cell.bias:
                params += [cell.bias_ih, cell.bias_hh]
            fused = _CELLS[type(cell)][2](cell)
            state = [s.unsqueeze(0) for s in state]
            with warnings.catch_warnings(), _cell_precision():
                # cuDNN: the cell's weights are not one buffer
                warnings.filterwarnings("ignore", "RNN module weights are not part of")
                hs, *final = fused(x, torch.tensor(batch_sizes), state[0] if len(state) == 1
                                   else tuple(state), params, cell.bias, 1, 0.0, grad, False)
            final = [s[0] for s in final]
        if self.term is not None:  # each step's terms, summed per row in order
            terms, start = [], 0
            for h, n in zip(hs.split(batch_sizes), batch_sizes):
                terms.append(self.term.run_batched([h], n, packed[start:start + n])[0])
                start += n
            terms = torch.cat(terms)
            owner = index_tensor([k for n in batch_sizes for k in range(n)], x.device)
            final.append(total.index_add(0, owner, terms))
        back = torch.empty_like(rows)
        back[rows] = torch.arange(size, device=rows.device)
        return [s.index_select(0, back) for s in final]

    def __call__(self, *state, data=()):
        """One example (used to locate a failing example)."""
        outs = self.run_batched([s.unsqueeze(0) for s in state], 1, [data])
        return tuple(o[0] for o in outs)


def recurrence_of(sig):
    """The `RecurrentTemplate` of signature `sig`, or None when it is not a segment
    whose code is "x from data alone, then a cell on (x, state)" (cached on `sig`)."""
    found = sig.recurrence
    if found is False:
        found = sig.recurrence = _recurrence(sig.fn) if sig.kind == "segment" else None
    return found


def _recurrence(segment):
    """The RecurrentTemplate of `segment` (see `recurrence_of`), or None."""
    from dynnet.segments import SegmentTemplate

    ops = segment.ops
    cells = [j for j, (sig, _, _) in enumerate(ops)
             if sig.kind == "op" and type(sig.fn) in _CELLS]
    if len(cells) != 1:
        return None
    j = cells[0]
    sig, _, refs = ops[j]
    template, n_state, _ = _CELLS[type(sig.fn)]
    if sig.template != template or tuple(refs[1:]) != tuple((-1, k) for k in range(n_state)) \
            or refs[0][0] < 0:
        return None
    data_only = _data_only(ops)
    if not all(data_only[:j]):
        return None  # x depends on the state
    outputs = [("ref", (j, k)) for k in range(n_state)]
    n_inputs = len(segment.sig.in_avals)
    term = None
    if n_inputs == n_state + 1:  # an accumulator: `total = total + f(h, data)`
        term = _term(segment, j)
        if term is None:
            return None
        outputs.append(("ref", (len(ops) - 1, 0)))
    elif n_inputs != n_state:
        return None
    if segment.outputs != outputs:
        return None
    inputs = SegmentTemplate(f"{segment.sig.name} input", (), ops[:j], [("ref", refs[0])],
                             segment.sig.origin)
    return RecurrentTemplate(segment, sig.fn, inputs, term)


def _data_only(ops):
    """Per op: whether it depends on per-example data and constants alone."""
    flags = []
    for _, _, refs in ops:
        flags.append(all(ref[0] >= 0 and flags[ref[0]] for ref in refs))
    return flags


_ADD = ((SLOT, SLOT), {})


def _term(segment, j):
    """The SegmentTemplate of `f` in a last op `total + f(h, data)` (either order), `h`
    the cell's first output and `total` the segment's last lazy input, used nowhere
    else; its one lazy input is `h`. None when the segment is not so."""
    from dynnet.segments import SegmentTemplate

    ops = segment.ops
    last = len(ops) - 1
    total = (-1, len(segment.sig.in_avals) - 1)
    sig, _, refs = ops[last]
    if last <= j or sig.kind != "op" or sig.fn is not operator.add or sig.template != _ADD:
        return None
    if sum(ref == total for _, _, op_refs in ops for ref in op_refs) != 1 or total not in refs:
        return None
    term_ref = refs[1] if refs[0] == total else refs[0]
    aval = segment.sig.in_avals[-1]
    if term_ref[0] < 0 or sig.out_avals[0] is not aval \
            or ops[term_ref[0]][0].out_avals[term_ref[1]] is not aval:
        return None
    needed, stack = set(), [term_ref[0]]
    while stack:  # the ops the term needs
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        for ref in ops[i][2]:
            if ref == (j, 0):
                continue
            if ref[0] < 0 or ref[0] == j:  # (ops before the cell are data alone)
                return None  # another state, or the cell's other outputs
            stack.append(ref[0])
    order = sorted(needed)
    place = {i: k for k, i in enumerate(order)}

    def moved(ref):
        return (-1, 0) if ref == (j, 0) else (place[ref[0]], ref[1])

    term_ops = [(ops[i][0], ops[i][1], tuple(moved(r) for r in ops[i][2])) for i in order]
    return SegmentTemplate(f"{segment.sig.name} term", (ops[j][0].out_avals[0],), term_ops,
                           [("ref", moved(term_ref))], segment.sig.origin)


def _only_from(inputs, previous, getrefcount=sys.getrefcount):
    """True when state `inputs` are the state `previous` made, in order, and held by
    this node alone: its `inputs` and the call's argument are their two references."""
    k = 0
    for state in inputs:  # `state` is a third reference
        if state.node is not previous or state.index != k or getrefcount(state) != 3:
            return False
        k += 1
    return True


def fuse_recurrences(pending):
    """`pending` with each chain of two or more steps of a fusable segment replaced by
    one node of its recurrence (see the module docstring); the same list when none."""
    chains = []
    tails = {}  # a chain's last node so far -> the chain's nodes
    for node in pending:
        sig = node.sig
        recurrence = sig.recurrence
        if recurrence is False:
            recurrence = recurrence_of(sig)
        if recurrence is None:
            continue
        inputs = node.inputs
        previous = inputs[0].node
        chain = tails.pop(previous, None)
        if chain is None or previous.sig is not sig or not _only_from(inputs, previous):
            chain = [node]
            chains.append(chain)
        else:
            chain.append(node)
        tails[node] = chain
    gone = set()
    for chain in chains:
        if len(chain) < 2:
            continue
        first, tail = chain[0], chain[-1]
        tail.payload = [node.payload for node in chain]
        tail.sig = first.sig.recurrence.sig
        tail.inputs = first.inputs
        tail.depth = first.depth
        gone.update(chain[:-1])
    return [node for node in pending if node not in gone] if gone else pending


def _tf32_products():
    """Whether float32 matrix products on CUDA may use TF32 (the user's setting)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32"
    return matmul.allow_tf32


@contextlib.contextmanager
def _cell_precision():
    """The fused call's float32 products in the precision of the cell's own.

    The user's steps run the cell's matrix products through cuBLAS, in full float32
    unless TF32 was allowed for them (`torch.backends.cuda.matmul`); cuDNN's RNNs run
    in TF32 by default (`torch.backends.cudnn.rnn`), which on an H100 put the fused
    values 1e-4 away from the steps'. The fused call follows the matmul setting.
    """
    matmul = torch.backends.cuda.matmul
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is None or not hasattr(matmul, "fp32_precision"):  # PyTorch before 2.9
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = matmul.allow_tf32
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old
        return
    old = rnn.fp32_precision
    rnn.fp32_precision = "tf32" if _tf32_products() else "ieee"
    try:
        yield
    finally:
        rnn.fp32_precision = old


def _cell_loop(x, batch_sizes, state, cell, keep_h=False):
    """`(every step's h or None, the final state)` of `cell` over packed input `x`
    (rows sorted longest first), as autograd-friendly torch ops: every step's input
    product in one call, then per step the recurrent one; a row's final state is kept
    when it leaves. `split` rather than slicing, whose backward would fill a gradient
    of the whole tensor per step (on the CPU this loop trains an LSTM 7-29% faster
    than the separate steps, where `torch.lstm` was up to 42% slower)."""
    step_of, fold = _STEPS[type(cell)]
    hs = []  # every step's new h, in the packed order (when `keep_h`)
    bias = None
    if cell.bias:
        bias = cell.bias_ih + cell.bias_hh if fold else cell.bias_ih
    inputs = torch.nn.functional.linear(x, cell.weight_ih, bias).split(batch_sizes)
    w_hh = cell.weight_hh.t()
    done = [[] for _ in state]
    for step, n in zip(inputs, batch_sizes):
        rest = state[0].shape[0] - n
        if rest:
            pieces = [s.split([n, rest]) for s in state]
            state = [p[0] for p in pieces]
            for kept, p in zip(done, pieces):
                kept.append(p[1])
        state = step_of(step, state, w_hh, cell)
        if keep_h:
            hs.append(state[0])
    final = [torch.cat([s] + kept[::-1]) for s, kept in zip(state, done)]
    return (torch.cat(hs) if keep_h else None), final


def _lstm_step(step, state, w_hh, cell):
    h, c = state
    i, f, g, o = torch.addmm(step, h, w_hh).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return [torch.sigmoid(o) * torch.tanh(c), c]


def _gru_step(step, state, w_hh, cell):
    (h,) = state
    hidden = torch.addmm(cell.bias_hh, h, w_hh) if cell.bias else h @ w_hh
    x_r, x_z, x_n = step.chunk(3, 1)
    h_r, h_z, h_n = hidden.chunk(3, 1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return [n + z * (h - n)]


def _rnn_step(step, state, w_hh, cell):
    (h,) = state
    pre = torch.addmm(step, h, w_hh)
    return [torch.tanh(pre) if cell.nonlinearity == "tanh" else torch.relu(pre)]


# cell class -> (its step, whether the recurrent bias folds into the input product)
_STEPS = {nn.LSTMCell: (_lstm_step, True), nn.GRUCell: (_gru_step, False),
          nn.RNNCell: (_rnn_step, True)}
