"""Batch plans: a traced and scheduled batch as plain data, executed by another process.

A worker process (dynnet/workers.py), forked from the process that trains, runs the
user's code on every example of a batch, schedules the nodes and encodes the result
as a `Plan`: per group, the signature's serial number, ready gather indices for each
input slot, the rows' payloads, and where every example's outputs are. The training
process then runs the groups from the plan alone: no user code, no per-node Python.

A plan can only name signatures that the executing process has too: those that
existed when the worker was forked (the same serial; see `tracing.Signature`). A batch
cannot be planned, and raises `PlanMiss` (the executing process then runs it itself),
when its trace made a new signature, paused for a value, had to execute something,
recorded a tensor computed while tracing from random numbers or from other tensors
(weights, which the worker holds as they were when it was forked), printed to a file,
or returned anything but lazy values and plain Python data. The examples' own input
tensors are fine: the plan says where each one is, and they are read here.
"""

import gc
import sys
import time
from array import array

import torch

from dynnet import tracing
from dynnet.backends import arena, numbers
from dynnet.backends.executor import GroupResult, call_batched, wrong_output
from dynnet.backends.gather import data_tensor, to_device
from dynnet.example_traces import portable
from dynnet.lazy import LazyTensor, Node
from dynnet.recurrences import fuse_recurrences
from dynnet.runtime import Trace, _Example, _profiles, _step, lift_inputs, tensor_leaves
from dynnet.segments import DataColumns

tracing.register_internal_file(__file__)


class PlanMiss(BaseException):
    """A batch that cannot be planned; the message says why. A BaseException, so that
    user code's `except Exception` never swallows it inside a worker."""


class Plan:
    """One batch, traced and scheduled (see the module docstring).

    Attributes:
      grad_enabled: the grad mode the batch was traced in.
      shapes: per arena `(shape, dtype, device)`.
      groups: per group `(serial, rows, payloads, reads, place)`: the signature's
        serial, its row count, the rows' payloads (None; data; the numbers of a
        group of per-example numbers; the stacked values of a pure factory such as
        `torch.zeros(n)`, or where each example's input tensor is), how to read its
        input slots (see `_reads`), and where its outputs go in the arenas (see
        `arena.layout`).
      indices: every gather index of the plan, in one int64 array (one transfer to
        the device per batch); reads name `(start, stop)` spans of it.
      results: per example its result, with `_Out` in place of lazy values.
      printed: per example index, the text it printed.
      nodes: how many nodes the trace recorded.
      replayed: how many examples were replayed from the trace cache.
      recorded: for a function that reuses traces, `(example index, portable trace)`
        of the examples traced there (example_traces.portable), kept here.
      fingerprint: what the batch was (see dynnet/workers.py), set by the worker.
    """

    __slots__ = ("grad_enabled", "shapes", "groups", "indices", "results", "printed",
                 "nodes", "replayed", "recorded", "fingerprint")


class _Out:
    """In a plan's results: output `index` of group `group`, row `row`."""

    __slots__ = ("group", "index", "row")

    def __init__(self, group, index, row):
        self.group, self.index, self.row = group, index, row


class _PlanningTrace(Trace):
    """A trace that must not execute anything: the worker's weights are stale, and
    the worker, a forked process, must not touch an accelerator (see `executes` in
    tracing._eager_constant)."""

    executes = False

    def flush(self):
        if self.pending:
            raise PlanMiss("an example needed a computed value (a test on a tensor, a "
                           "call that completes at once)")


# -------------------- the worker side: trace, schedule, encode --------------------

def plan_batch(make_generator, per_example_args, known, strategy=None, traces=None,
               in_worker=True):
    """The `Plan` of running every example, without executing anything. `known` is the
    count of signatures the executing process has (serials below it). Examples found in
    `traces` (the function's `TraceCache`, as it was when the worker was forked) are
    replayed; in a worker (`in_worker`), not those whose trace holds a tensor on an
    accelerator, which a forked process must not touch."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the trace's many small objects live until the plan is made
    try:
        return _plan(make_generator, per_example_args, known, strategy, traces, in_worker)
    finally:
        if gc_was_enabled:
            gc.enable()


def _plan(make_generator, per_example_args, known, strategy, traces, in_worker):
    trace = _PlanningTrace(strategy)
    tracing._active.append(trace)
    grad_enabled = torch.is_grad_enabled()
    inputs = {}  # id of a lifted input's node -> (example, its position among them)
    try:
        examples, replays = [], {}
        for i, args in enumerate(per_example_args):
            entry = traces.lookup(args, grad_enabled) if traces is not None else None
            if entry is not None and not (in_worker and entry.on_device):
                replays[i] = entry  # replayed in its turn, as tracing it would
            examples.append(_Example(i, None))
        recorded = []  # (example index, portable trace) of the examples traced here
        if traces is not None:
            trace.hits = []
        for ex in examples:  # in order, each started in its turn (see runtime.run_batch)
            trace.instance = i = ex.index
            entry = replays.get(i)
            if entry is not None:
                ex.result = traces.replay(trace, entry, i)
                continue
            start = len(trace.pending)
            lifted = lift_inputs(per_example_args[i])
            for j, node in enumerate(trace.pending[start:]):
                inputs[id(node)] = (i, j)
            begin = len(trace.pending)
            hits = len(trace.hits) if traces is not None else 0
            torch._C._set_grad_enabled(grad_enabled)
            ex.stack[0] = make_generator(lifted)  # a function that never pauses runs here
            if _step(ex):
                raise PlanMiss("an example paused for a value (a test on a tensor)")
            if traces is not None:
                form = portable(trace, ex, begin, trace.hits[hits:])
                if form is not None:
                    recorded.append((ex.index, form))
    finally:
        torch._C._set_grad_enabled(grad_enabled)
        tracing._active.pop()
    groups = list(trace.schedule(fuse_recurrences(trace.pending)))
    plan = Plan()
    plan.fingerprint = None
    plan.grad_enabled = grad_enabled
    plan.nodes = len(trace.pending)
    plan.replayed = len(replays)
    plan.recorded = recorded
    plan.shapes, places = arena.layout(groups)
    for g, (_, nodes) in enumerate(groups):
        for row, node in enumerate(nodes):
            node.group = g  # the worker's nodes are never executed: a group number
            node.row = row
    sizes = [len(nodes) for _, nodes in groups]
    plan.groups = []
    for g, (sig, nodes) in enumerate(groups):
        joined = numbers.known_joined(sig, known) if sig.serial >= known else None
        if joined is not None:  # an op with a number new to the executing process
            entry = (joined.serial, [joined.fn.number_of(n.sig) for n in nodes])
        else:
            entry = (_serial(sig, known), _payloads(sig, nodes, inputs))
        plan.groups.append((entry[0], len(nodes), entry[1], _reads(sig, nodes, sizes, places),
                            places[g]))
    plan.indices = _pack(plan.groups)
    plan.results = [_encode(ex.result) for ex in examples]
    plan.printed = {}
    for index, items in trace.outputs.items():
        if any(file is not None for file, _ in items):
            raise PlanMiss("an example printed to a file")
        plan.printed[index] = "".join(text for _, text in items)
    return plan


def _serial(sig, known):
    if sig.serial >= known:
        raise PlanMiss(f"new batching signature {sig.describe()}, first seen at "
                       f"{tracing.where(sig.origin) if sig.origin else 'an input'}")
    return sig.serial


def _payloads(sig, nodes, inputs):
    kind = sig.kind
    if kind == "op":
        return None
    if kind == "numbers":
        return [sig.fn.number_of(n.sig) for n in nodes]
    if kind == "segment" or kind == "loop" or kind == "const":
        payloads = [n.payload for n in nodes]
        if kind == "segment":  # data tuples of one length, fixed by the segment's code
            if not payloads[0]:
                return _NO_DATA
            payloads = DataColumns([_column(c) for c in zip(*payloads)])
            plain = all(c.__class__ is array or _plain(c) for c in payloads.columns)
        else:
            plain = _plain(payloads)
        if not plain:
            raise PlanMiss(f"{sig.name}: per-example data that is not plain Python")
        return payloads
    if kind == "stack":
        if sig.fn is not None:  # values of a pure factory (torch.zeros(n)): stacked
            return torch.stack([n.payload for n in nodes])
        payloads = [inputs.get(id(n)) for n in nodes]
        if all(p is not None for p in payloads):  # the examples' input tensors: where
            return payloads
    raise PlanMiss("a tensor computed while tracing, from random numbers or from other "
                   "tensors (weights, say), which the worker holds as they were when it "
                   "started")


_NO_DATA = DataColumns([])  # the rows of a segment without data inputs


def _column(values):
    """One data input of every row: an int64 or float64 array when it can be one (a
    segment's key fixes each data input's class, so the rows agree on it)."""
    cls = values[0].__class__
    if cls is int or cls is float:
        try:
            return array("q" if cls is int else "d", values)
        except (TypeError, OverflowError):  # beyond int64: torch.tensor says what is wrong
            pass
    return list(values)


_PLAIN = (int, float, bool, str, type(None))


def _plain(obj):
    cls = obj.__class__
    if cls in _PLAIN:
        return True
    if cls is tuple or cls is list:
        return all(_plain(x) for x in obj)
    return False


# A read: (_WHOLE, g, k) all of output k of group g in order; (_SLICE, g, k, start, stop);
# (_ROWS, g, k, rows); (_MANY, ((g, k, rows), ...), inverse or None): rows of several
# outputs, concatenated, then permuted by `inverse`; (_ARENA, number, rows, slots): one
# index_select of arena `number` for all of `slots`, split among them in order.
_WHOLE, _SLICE, _ROWS, _MANY, _ARENA = range(5)


def _reads(sig, nodes, sizes, places):
    """How the group's input slots are read: a list of reads that together fill every
    slot, each `(slot, tag, ...)` with a tag above (`_ARENA` reads have slot None and
    fill the slots they list)."""
    n_slots = len(sig.in_avals)
    if not n_slots:
        return []
    reads = []
    by_arena = {}  # arena number -> (rows, slots)
    columns = [[n.inputs[0] for n in nodes]] if n_slots == 1 else \
        list(zip(*[n.inputs for n in nodes]))
    for j, column in enumerate(columns):
        first = column[0]
        g, k = first.node.group, first.index
        rows = []
        for t in column:
            node = t.node
            if node.group != g or t.index != k:
                break
            rows.append(node.row)
        else:  # one group output
            n = len(rows)
            if rows[-1] - rows[0] == n - 1 and rows == list(range(rows[0], rows[0] + n)):
                reads.append((j, _WHOLE, g, k) if n == sizes[g] else
                             (j, _SLICE, g, k, rows[0], rows[0] + n))
            else:
                reads.append((j, _ROWS, g, k, array("q", rows)))
            continue
        found = _arena_rows(column, places)
        if found is not None:
            number, rows = found
            entry = by_arena.setdefault(number, (array("q"), []))
            entry[0].extend(rows)
            entry[1].append(j)
            continue
        reads.append((j, _MANY) + _many(column))
    for number, (rows, slots) in by_arena.items():
        reads.append((None, _ARENA, number, rows, slots))
    return reads


def _arena_rows(column, places):
    """`(arena number, rows)` when one arena holds every value of `column`, else None."""
    first = column[0]
    place = places[first.node.group]
    own = place[first.index] if place is not None else None
    if own is None:
        return None
    number, rows = own[0], []
    for t in column:
        node = t.node
        place = places[node.group]
        own = place[t.index] if place is not None else None
        if own is None or own[0] != number:
            return None
        rows.append(own[1] + node.row)
    return number, rows


def _many(column):
    sources = {}  # (g, k) -> (rows, positions)
    for pos, t in enumerate(column):
        entry = sources.setdefault((t.node.group, t.index), ([], []))
        entry[0].append(t.node.row)
        entry[1].append(pos)
    order = [pos for _, positions in sources.values() for pos in positions]
    inverse = [0] * len(order)
    for i, pos in enumerate(order):
        inverse[pos] = i
    parts = tuple((g, k, array("q", rows)) for (g, k), (rows, _) in sources.items())
    return parts, None if inverse == list(range(len(order))) else array("q", inverse)


def _pack(groups):
    """Moves the index arrays of every group's reads into one array, which it returns;
    the reads keep `(start, stop)` spans of it instead."""
    packed = array("q")

    def span(rows):
        start = len(packed)
        packed.extend(rows)
        return start, len(packed)

    for g, (serial, rows, payloads, reads, place) in enumerate(groups):
        spans = []
        for read in reads:
            tag = read[1]
            if tag == _ROWS:
                read = read[:4] + (span(read[4]),)
            elif tag == _ARENA:
                read = read[:3] + (span(read[3]), read[4])
            elif tag == _MANY:
                parts = tuple((pg, pk, span(rows)) for pg, pk, rows in read[2])
                read = (read[0], _MANY, parts, None if read[3] is None else span(read[3]))
            spans.append(read)
        groups[g] = (serial, rows, payloads, spans, place)
    return packed


def _encode(obj):
    """An example's result with `_Out` in place of its lazy values."""
    cls = obj.__class__
    if cls is LazyTensor:
        return _Out(obj.node.group, obj.index, obj.node.row)
    if cls in _PLAIN:
        return obj
    if cls is tuple or cls is list:
        return cls(_encode(x) for x in obj)
    if cls is dict:
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(cls, "_fields"):  # a namedtuple
        return cls(*[_encode(x) for x in obj])
    raise PlanMiss(f"an example returned a {cls.__name__}; a planned batch returns lazy "
                   "values and plain Python data")


# -------------------- the executing side --------------------

def execute_plan(plan, signatures, examples, kept=False):
    """Runs `plan`; returns the examples' results (lazy values already computed).

    `signatures` maps serial -> Signature (those the worker was forked with);
    `examples` are the batch's per-example argument tuples (their tensors are the
    plan's inputs). A batched call that fails raises PlanMiss: run in this process,
    the batch then names the failing example. `kept`: the plan is one this process
    kept for a batch seen before (dynnet/replayed_batches.py), not a worker's."""
    start = time.perf_counter()
    try:
        sigs = [signatures[serial] for serial, *_ in plan.groups]
    except KeyError as e:  # cannot happen with a worker forked from this process
        raise PlanMiss(f"the plan names signature {e} unknown here") from None
    arenas, gradients, placements = arena.allocate(plan.shapes, [g[4] for g in plan.groups])
    outputs = []  # per group, its output tensors
    index = _Indices(plan.indices)
    inputs = {}  # example -> its input tensors, in the order `lift_inputs` lifts them
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as while tracing: nothing cyclic is made here
    try:
        for sig, (_, rows, payloads, reads, _), placement in zip(sigs, plan.groups,
                                                                placements):
            slots = _read(reads, len(sig.in_avals), outputs, arenas, gradients, index)
            kind = sig.kind
            if kind == "const":
                leaves = [data_tensor(payloads, sig.out_avals[0])]
            elif kind == "stack":  # made on the CPU for another device by the worker
                leaves = [to_device(payloads, sig.out_avals[0].device)
                          if payloads.__class__ is torch.Tensor else
                          torch.stack([_input(examples, inputs, p) for p in payloads])]
            else:
                try:
                    leaves = call_batched(sig, slots, rows, payloads, placement)
                except Exception as e:
                    raise PlanMiss(f"{sig.name} failed batched ({type(e).__name__})") from e
                if wrong_output(sig, leaves, rows) is not None:
                    raise PlanMiss(f"{sig.name} returned the wrong shapes batched")
            if placement is not None:
                arena.store(placement, leaves)
            outputs.append(leaves)
    finally:
        if gc_was_enabled:
            gc.enable()
        arena.release(placements)  # the round is over
    results = [GroupResult(out) for out in outputs]
    for example in sorted(plan.printed):
        sys.stdout.write(plan.printed[example])
    decoded = [_decode(r, results, sigs, i) for i, r in enumerate(plan.results)]
    for p in _profiles:
        p.batches += 1
        if kept:
            p.replayed_batches += 1
        else:
            p.planned_batches += 1
        p.nodes += plan.nodes
        p.replayed += plan.replayed
        p.groups += len(plan.groups)
        p.rounds += 1
        elapsed = time.perf_counter() - start
        p.execute_seconds += elapsed
        p.total_seconds += elapsed
        for sig, (_, rows, *_) in zip(sigs, plan.groups):
            p.group_sizes.setdefault(sig, []).append(rows)
    return decoded


def _input(examples, inputs, ref):
    """Tensor input `j` of example `i` (`inputs` caches each example's tensors)."""
    i, j = ref
    found = inputs.get(i)
    if found is None:
        found = inputs[i] = []
        tensor_leaves(examples[i], found)
    return found[j]


class _Indices:
    """A plan's packed gather indices as int64 tensors, moved once to each device."""

    def __init__(self, packed):
        self.on = {"cpu": torch.frombuffer(packed, dtype=torch.int64) if len(packed)
                   else torch.empty(0, dtype=torch.int64)}

    def __call__(self, span, device):
        """The indices of `span` on `device`."""
        key = str(device)
        tensor = self.on.get(key)
        if tensor is None:
            tensor = self.on[key] = to_device(self.on["cpu"], device)
        return tensor[span[0]:span[1]]


def _read(reads, n_slots, outputs, arenas, gradients, index):
    slots = [None] * n_slots
    for read in reads:
        tag = read[1]
        if tag == _WHOLE:
            slots[read[0]] = outputs[read[2]][read[3]]
        elif tag == _SLICE:
            slots[read[0]] = outputs[read[2]][read[3]][read[4]:read[5]]
        elif tag == _ARENA:
            _, _, number, rows, positions = read
            buffer = arenas[number]
            value = arena.select(buffer, index(rows, buffer.device), number, gradients)
            if len(positions) == 1:
                slots[positions[0]] = value
            else:
                per_slot = (rows[1] - rows[0]) // len(positions)
                for j, part in zip(positions, value.split(per_slot)):
                    slots[j] = part
        elif tag == _ROWS:
            buffer = outputs[read[2]][read[3]]
            slots[read[0]] = buffer.index_select(0, index(read[4], buffer.device))
        else:  # _MANY
            parts = [outputs[g][k].index_select(0, index(rows, outputs[g][k].device))
                     for g, k, rows in read[2]]
            stacked = torch.cat(parts)
            inverse = read[3]
            slots[read[0]] = stacked if inverse is None else stacked.index_select(
                0, index(inverse, stacked.device))
    return slots


def _decode(obj, results, sigs, instance):
    cls = obj.__class__
    if cls is _Out:
        sig = sigs[obj.group]
        node = Node(sig, (), 0, instance)
        node.group = results[obj.group]
        node.row = obj.row
        return LazyTensor(node, obj.index, sig.out_avals[obj.index])
    if cls is tuple or cls is list:
        return cls(_decode(x, results, sigs, instance) for x in obj)
    if cls is dict:
        return {k: _decode(v, results, sigs, instance) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(cls, "_fields"):
        return cls(*[_decode(x, results, sigs, instance) for x in obj])
    return obj
