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
the backward pass (hand-batched code pays that). Gradients go through the round's
`RoundGradients` instead:

- a gather that needs gradients is an `ArenaGather`; its backward adds its gradient
  into one gradient buffer per arena and backward pass, so the gradient of a value
  read at many levels is summed in place (not in a zero-filled tensor per reader,
  plus one addition per producer); out of place when the pass builds a graph
  (`create_graph=True`), so that second-order gradients flow through it;
- a group that stores outputs needing gradients extends a chain of scalar tokens
  (`ArenaAppend`), and every gather takes the latest token as an input. A group's
  `ArenaAppend` therefore runs in the backward pass after every gather that could
  read its rows, and hands the group its rows of the finished buffers. The tokens
  only order the backward pass: their values are never written and their gradients
  are None (autograd still runs every node of the chain), so they launch no kernel
  on a card.
"""

import torch


class Placement:
    """Where one group's outputs go: per output, `(arena, base, number, gradients)` or
    None (`number` names the arena in the round's `RoundGradients` `gradients`)."""

    __slots__ = ("slots",)

    def __init__(self, n_outputs):
        self.slots = [None] * n_outputs


class RoundGradients:
    """The gradient bookkeeping of one round's arenas (see the module docstring)."""

    __slots__ = ("shapes", "token", "buffers")

    def __init__(self):
        self.shapes = []  # per arena number: (shape, dtype, device)
        self.token = None  # the latest ArenaAppend output, once a stored value needs grad
        self.buffers = {}  # backward pass (graph task id) -> {arena number: gradient}

    def add(self, number, index, grad):
        """Adds `grad` to rows `index` of arena `number`'s gradient in the running
        backward pass (in place, unless the pass builds a graph: `create_graph`)."""
        task = torch._C._current_graph_task_id()
        buffers = self.buffers.get(task)
        if buffers is None:
            buffers = self.buffers[task] = {}
        buffer = buffers.get(number)
        if buffer is None:
            shape, dtype, device = self.shapes[number]
            buffer = buffers[number] = torch.zeros(shape, dtype=dtype, device=device)
        if torch.is_grad_enabled():  # a differentiable gradient: no in-place update
            buffers[number] = buffer.index_add(0, index, grad)
            return
        if grad.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr():
            grad = grad.clone()  # a value read and stored as it is: rows of this buffer
        buffer.index_add_(0, index, grad)


def layout(groups):
    """Where the outputs of `groups` (`(sig, nodes)` in execution order) go, without
    allocating: `(shapes, places)`, per arena `(shape, dtype, device)`, and per group
    None or, per output, None or `(arena number, base row)`."""
    counts = {}  # (aval, output position) -> rows, per key over the round
    producers = {}  # key -> number of groups writing it
    for sig, nodes in groups:
        for k, aval in enumerate(sig.out_avals):
            key = (aval, k)
            counts[key] = counts.get(key, 0) + len(nodes)
            producers[key] = producers.get(key, 0) + 1
    numbers, shapes, cursor = {}, [], {}
    for key, rows in counts.items():
        if producers[key] > 1:
            aval = key[0]
            numbers[key] = len(shapes)
            shapes.append(((rows, *aval.shape), aval.dtype, aval.device))
            cursor[key] = 0
    places = []
    for sig, nodes in groups:
        place = None
        if numbers:
            for k, aval in enumerate(sig.out_avals):
                number = numbers.get((aval, k))
                if number is None:
                    continue
                if place is None:
                    place = [None] * len(sig.out_avals)
                base = cursor[(aval, k)]
                place[k] = (number, base)
                cursor[(aval, k)] = base + len(nodes)
        places.append(place)
    return shapes, places


def allocate(shapes, places):
    """`(arenas, gradients, placements)` of a `layout`: the arenas it names, allocated,
    their `RoundGradients` (None without arenas), and per group its Placement or None."""
    if not shapes:
        return (), None, [None] * len(places)
    gradients = RoundGradients()
    gradients.shapes = list(shapes)
    arenas = [torch.empty(shape, dtype=dtype, device=device)
              for shape, dtype, device in shapes]
    placements = []
    for place in places:
        placement = None
        if place is not None:
            placement = Placement(len(place))
            placement.slots = [None if p is None else (arenas[p[0]], p[1], p[0], gradients)
                               for p in place]
        placements.append(placement)
    return arenas, gradients, placements


def plan(groups):
    """Per group of `groups` (`(sig, nodes)` in execution order) its Placement or None."""
    return allocate(*layout(groups))[2]


def release(placements):
    """Ends a round: its arenas take no more gathers. Drops the token, which would
    otherwise tie the round's autograd graph to itself through the `RoundGradients`
    that its nodes hold (a cycle through C++ that Python's collector cannot see: the
    graph, and every activation it saved, would never be freed)."""
    for placement in placements:
        if placement is not None:
            for slot in placement.slots:
                if slot is not None:
                    slot[3].token = None
                    return


def store(placement, outputs):
    """Copies a group's batched outputs into its arena rows (values only); outputs that
    need gradients extend the round's token chain."""
    with torch.no_grad():
        for slot, value in zip(placement.slots, outputs):
            if slot is not None:
                rows = slot[0][slot[1]:slot[1] + value.shape[0]]
                if rows.data_ptr() != value.data_ptr():  # else computed in place there
                    rows.copy_(value)
    if torch.is_grad_enabled():
        places, tracked, gradients = [], [], None
        for slot, value in zip(placement.slots, outputs):
            if slot is not None and value.requires_grad:
                places.append((slot[2], slot[1], value.shape[0]))
                tracked.append(value)
                gradients = slot[3]
        if tracked:
            gradients.token = ArenaAppend.apply(gradients, places, gradients.token, *tracked)


def select(arena, index, number, gradients):
    """`arena.index_select(0, index)`, differentiable towards the groups that wrote the
    rows once a value stored in the round needs gradients."""
    token = gradients.token
    if token is not None and torch.is_grad_enabled():
        return ArenaGather.apply(arena, index, number, gradients, token)
    return arena.index_select(0, index)


class ArenaGather(torch.autograd.Function):
    """Rows of an arena; the backward adds the gradient into the arena's buffer."""

    @staticmethod
    def forward(ctx, arena, index, number, gradients, token):
        ctx.save_for_backward(index)
        ctx.number = number
        ctx.gradients = gradients
        return arena.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        ctx.gradients.add(ctx.number, index, grad)
        return None, None, None, None, None  # the token orders; its gradient is none


class ArenaAppend(torch.autograd.Function):
    """The next token of a round's chain after a group stored `outputs` (see the module
    docstring). Its backward hands each output its rows of the gradient buffers; the
    first of the chain, the last to run, frees the pass's buffers."""

    @staticmethod
    def forward(ctx, gradients, places, token, *outputs):
        ctx.gradients = gradients
        ctx.places = places  # per output: (arena number, base row, rows)
        ctx.first = token is None
        ctx.set_materialize_grads(False)  # the token's gradient stays None: no zeros
        # a token's value is never read: no kernel; on the outputs' device, so that
        # autograd runs the chain on that device's thread
        return outputs[0].new_empty(())

    @staticmethod
    def backward(ctx, token_grad):
        gradients = ctx.gradients
        task = torch._C._current_graph_task_id()
        buffers = gradients.buffers.get(task, {})
        grads = []
        for number, base, rows in ctx.places:
            buffer = buffers.get(number)
            grads.append(None if buffer is None else buffer[base:base + rows])
        if ctx.first:
            gradients.buffers.pop(task, None)
        return (None, None, None, *grads)
