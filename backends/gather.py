"""Gathering the rows of a group's inputs from the buffers that hold them.

Every executed node's value is row `node.row` of output `index` of its group's
buffers. A gather costs: nothing when the rows are a whole buffer in order, one
index_select when they come from one buffer or from one arena of the current round
(backends/arena.py; one for all of a group's input slots that read that arena), else
one index_select per source, a cat and a permutation.
"""

from array import array

import torch

from dynnet.backends.arena import select


def to_device(host, device, dtype=None):
    """`host` (a CPU tensor) on `device`, in `dtype` if given, without waiting for the
    device.

    A plain `.to("cuda")` of host memory waits until the card has run everything
    queued before it (PyTorch synchronizes the stream after the copy); with
    `non_blocking=True` the copy from ordinary (pageable) memory is staged by the
    driver before the call returns, so `host` may be freed at once, and the card
    keeps working while this process traces and schedules the next ops.
    """
    if torch.device(device).type == "cpu":
        return host if dtype is None else host.to(dtype)
    return host.to(device=device, dtype=dtype, non_blocking=True)


def index_tensor(rows, device):
    """`rows` (a list of ints) as an int64 tensor on `device`.

    Through an array buffer: `torch.tensor` of a Python list costs about 40 µs for
    300 ints, this about 6 µs.
    """
    if not rows:
        return torch.empty(0, dtype=torch.int64, device=device)
    return to_device(torch.frombuffer(array("q", rows), dtype=torch.int64), device)


def data_tensor(values, aval):
    """Per-example Python scalars as one tensor of `aval`'s dtype and device."""
    if aval.dtype is torch.int64 and all(v.__class__ is int for v in values):
        return index_tensor(values, aval.device)
    return to_device(torch.tensor(values, dtype=aval.dtype), aval.device)


def gather(lazies):
    """Stacks the values of `lazies` (executed lazy tensors) along a new dim 0."""
    return gather_columns([lazies])[0]


def gather_columns(columns):
    """`[gather(c) for c in columns]` (columns of equal length), with one
    index_select per arena for all the columns that read that arena."""
    out = [None] * len(columns)
    by_arena = {}  # id(arena) -> (slot, column positions, rows)
    for j, lazies in enumerate(columns):
        value = _from_one_buffer(lazies)
        if value is not None:
            out[j] = value
            continue
        found = _arena_rows(lazies)
        if found is None:
            out[j] = _gather_many(lazies)
            continue
        slot, rows = found
        entry = by_arena.get(id(slot[0]))
        if entry is None:
            by_arena[id(slot[0])] = (slot, [j], rows)
        else:
            entry[1].append(j)
            entry[2].extend(rows)
    for slot, positions, rows in by_arena.values():
        arena, _, number, gradients = slot
        value = select(arena, index_tensor(rows, arena.device), number, gradients)
        if len(positions) == 1:
            out[positions[0]] = value
        else:
            for j, part in zip(positions, value.split(len(columns[positions[0]]))):
                out[j] = part
    return out


def _from_one_buffer(lazies):
    """The stacked values when one group output holds them all, else None."""
    first = lazies[0]
    buf = first.node.group.outputs[first.index]
    rows = []
    for t in lazies:
        node = t.node
        if node.group.outputs[t.index] is not buf:
            return None
        rows.append(node.row)
    n = len(rows)
    if n == buf.shape[0] and rows[0] == 0 and rows[-1] == n - 1 and rows == list(range(n)):
        return buf
    if rows[-1] - rows[0] == n - 1 and rows == list(range(rows[0], rows[0] + n)):
        return buf[rows[0]:rows[0] + n]
    return buf.index_select(0, index_tensor(rows, buf.device))


def _arena_rows(lazies):
    """`(slot, rows)` when one arena of the round holds every value (`slot` is the
    first value's placement slot, see backends/arena.py), else None."""
    first = lazies[0]
    slots = first.node.group.slots
    slot = slots[first.index] if slots is not None else None
    if slot is None:
        return None
    arena = slot[0]
    rows, last, last_index, base = [], None, -1, 0
    for t in lazies:
        node = t.node
        group = node.group
        if group is not last or t.index != last_index:
            last, last_index = group, t.index
            slots = group.slots
            own = slots[last_index] if slots is not None else None
            if own is None or own[0] is not arena:
                return None
            base = own[1]
        rows.append(base + node.row)
    return slot, rows


def _gather_many(lazies):
    sources = {}  # id(buffer) -> (buffer, rows, positions)
    for pos, t in enumerate(lazies):
        node = t.node
        buf = node.group.outputs[t.index]
        entry = sources.get(id(buf))
        if entry is None:
            entry = sources[id(buf)] = (buf, [], [])
        entry[1].append(node.row)
        entry[2].append(pos)
    parts, order = [], []
    for buf, rows, positions in sources.values():
        parts.append(buf.index_select(0, index_tensor(rows, buf.device)))
        order.extend(positions)
    stacked = torch.cat(parts)
    inverse = [0] * len(order)
    for i, pos in enumerate(order):
        inverse[pos] = i
    if inverse == list(range(len(order))):
        return stacked
    return stacked.index_select(0, index_tensor(inverse, stacked.device))
