"""Reused example traces: an example seen before is replayed, not traced again.

Tracing runs the user's Python for every node of every example (the tree-LSTM's
recursion: about 3.7 µs a node on a 2-core CPU, as much as executing the batch). For
a function opted in with `dynnet.function(reuse_traces=True)`, the nodes an example
recorded are kept, keyed by the identity of its arguments, and a later batch holding
the same argument objects (the next epoch over the same trees, in any order and any
batch) records them again from that copy: a loop over stored steps, without running
the user's code. A replay records the nodes tracing would, in the order it would (a
leaf shared with another example comes where the code called for it, examples take
their turns in order), so a batch's results are the same bits replayed or traced.

What a replay does not do is run the user's code: its Python side effects (other
than printing, whose text is replayed) do not happen again. It is exact when the
example's trace depends only on the example: its arguments' contents (which must not
change while cached) and the model as it was. The cache checks what it can see (see
`fingerprint`): the grad mode (part of the key), the shared keyword arguments
(numbers with their class, strings, and lists, tuples and dicts of up to 64 of them,
by value; other objects by identity), and, for each `nn.Module` among the arguments or the shared
keyword arguments (a method's `self`, `f.batch(xs, model=m)`), its submodules, their
`training` flags and hooks, their plain attributes (`self.depth = 3`, `self._depth`;
what a keyword argument would be seen as: numbers, strings and small containers of
them by value, anything else, an enum member, a config object, a tensor, by identity,
so a config object changed in place is not seen), and the identity, memory,
device, dtype and `requires_grad` of their parameters and buffers; a change of any
empties the traces kept for those modules. What it sees by identity it holds (but the
modules), so that no new object takes a freed one's id. Anything else the code reads
(a global setting, a module it reaches through a global, a longer list changed in
place, random numbers drawn with Python's `random` or numpy) is the user's to keep
unchanged, or to announce with `f.clear_traces()`.

With workers (`f.batches`), a forked worker replays what the cache held when it was
forked, and sends back with each plan the traces of the examples it traced, in a
portable form (`portable`: signatures by serial number, plain data); this process
keeps them as they came and decodes them before it forks the next workers. A worker
does not replay a trace that holds a tensor on an accelerator (a zero state made on
the GPU): it must not touch the device, and traces such an example instead.

Memory: about 200 bytes a recorded node (7 KB an SST tree of 38 nodes; the
examples' own data, which the cache holds, aside), up to `max_examples` examples per
set of modules (100,000 unless `reuse_traces` is a number). Examples made anew for
every batch (a loader that builds new objects) never replay and only fill it.

An example is kept only when it ran in one go, on signatures and segments seen
before: one that paused for a value (a test on a tensor), executed part of the graph,
read a lazy value made before it ran (its own input tensors), read the value of a
tensor that is not lazy (`if self.gate > 0` on a parameter, a buffer's `.item()`: the
value may change in place, as an optimizer step changes it), made a tensor while
tracing from random numbers (`torch.randn(3)`; random ops on lazy values, such as
dropout, draw anew when the batch runs, replayed or not) or made a new signature (the
first call of a segment records its ops one by one) is traced every time;
the profile's `fallbacks` (`with dynnet.profile() as p:`) counts them, with why.
"""

import contextlib
import gc
import numbers
import weakref
from operator import itemgetter

import torch

from dynnet import tracing
from dynnet.lazy import LazyTensor, Node, collect_lazy

_SCALARS = (int, float, bool, str, type(None))


class _Recorded:
    """One example's trace: its arguments other than modules (held, so that their ids
    stay theirs), the steps that record its nodes, its result's structure and what it
    printed."""

    __slots__ = ("args", "steps", "result", "printed", "on_device", "encoded")

    def __init__(self, args, steps, result, printed, encoded=None):
        self.args = args
        self.steps = steps
        self.result = result
        self.printed = printed
        # a step holds a tensor on an accelerator (a factory's value, `torch.zeros(n,
        # device="cuda")`): a forked worker, which must not touch the device, traces
        # the example instead (dynnet/plans.py)
        self.on_device = steps is not None and any(
            step[4].__class__ is torch.Tensor and step[4].device.type != "cpu"
            for step in steps)
        self.encoded = encoded  # a worker's portable steps, until decoded (`decode`)

    def decode(self):
        """Makes `steps` from the portable form a worker sent (see `portable`); False
        when a signature it names is gone."""
        signatures = tracing.signatures_by_serial
        steps = []
        try:
            for kind, serial, refs, depth, payload, key in self.encoded:
                sig = signatures[serial]
                if kind == _OP_MEMO:
                    payload = tuple((signatures[s], p, signatures[s].out_avals[0])
                                    for s, p in payload)
                elif payload.__class__ is torch.Tensor:  # made on the CPU by the worker
                    payload = payload.to(sig.out_avals[0].device)
                steps.append((kind, sig, _reader(refs), depth, payload,
                              _outputs_of(sig.out_avals), _decode(key, signatures)))
        except KeyError:
            return False
        self.steps, self.encoded = steps, None
        return True


class _Partition:
    """The traces recorded with one set of modules among the arguments (a method's
    `self`), under one fingerprint of them."""

    __slots__ = ("state", "held", "entries", "plans", "planned", "seen")

    def __init__(self, state):
        self.state = state
        self.held = ()  # the objects `state` sees by identity (see `fingerprint`)
        self.entries = {}  # (grad mode, ids of the arguments) -> _Recorded
        self.forget_batches()

    def forget_batches(self):
        """Drops the plans of batches seen before (dynnet/replayed_batches.py)."""
        self.plans = {}  # (grad mode, ids of the batch's entries) -> (entries, Plan or None)
        self.planned = 0  # examples in those plans
        self.seen = set()  # keys of the fully replayed batches seen once


class TraceCache:
    """The recorded traces of one function's examples (see the module docstring).

    Traces are kept per set of modules among the arguments, so that two models (two
    objects of a class whose method reuses traces) keep theirs side by side; a module's
    traces go when it does (the cache holds no module)."""

    def __init__(self, max_examples=100_000):
        if max_examples.__class__ is not int or max_examples < 1:
            raise ValueError(f"reuse_traces: expected True or a count of examples to "
                             f"keep (1 or more), not {max_examples!r}")
        self.max_examples = max_examples  # per set of modules
        self.partitions = {}  # ids of the modules -> _Partition
        self.current = None  # the partition of the batch being run (see `begin`)
        self.clears = 0  # how many times `clear` ran

    def clear(self):
        self.partitions.clear()
        self.current = None
        self.clears += 1  # traces recorded before (by running workers) are not adopted

    def begin(self, per_example_args, kwargs):
        """Called before a batch: picks the partition of the batch's modules, emptied
        when what the cache can see of them changed."""
        modules = modules_among(per_example_args, kwargs)
        key = tuple(sorted(modules))
        state, held = fingerprint(modules.values(), kwargs)
        part = self.partitions.get(key)
        if part is None:
            part = self.partitions[key] = _Partition(state)
            part.held = held
            for module in modules.values():
                weakref.finalize(module, self.partitions.pop, key, None)
        elif part.state != state:
            part.entries.clear()
            part.forget_batches()
            part.state, part.held = state, held
        self.current = part

    def lookup(self, args, grad_enabled):
        entry = self.current.entries.get((grad_enabled, *map(id, args)))
        if entry is None:
            return None
        for a, b in zip(entry.args, args):
            if a is not b and a is not None:  # None: a module, which the partition fixes
                return None
        if entry.steps is None and not entry.decode():
            return None
        return entry

    def record(self, trace, ex, args, start, grad_enabled, hits=()):
        """Keeps example `ex`'s trace (nodes `trace.pending[start:]`) when it can be
        replayed, else returns why not; `ex` ran in one go. `hits` are its calls that
        found their node in the batch's memo: `(len(trace.pending) then, memo key)`."""
        entries = self.current.entries
        if len(entries) >= self.max_examples:
            return f"the cache is full ({self.max_examples} examples, see reuse_traces)"
        captured = _capture(trace, ex, start, hits)
        if captured.__class__ is str:
            return captured
        steps, _, result, printed = captured
        self._keep(args, grad_enabled, steps, result, printed)
        return None

    def decode_all(self):
        """Decodes the traces adopted from workers (so that forked workers share them
        decoded); drops those that name a signature gone since."""
        entries = self.current.entries
        with collector_paused():
            for key in [k for k, e in entries.items() if e.steps is None]:
                if not entries[key].decode():
                    del entries[key]

    def _keep(self, args, grad_enabled, steps, result, printed, encoded=None):
        held = tuple(None if isinstance(a, torch.nn.Module) else a for a in args)
        self.current.entries[(grad_enabled, *map(id, args))] = _Recorded(
            held, steps, result, printed, encoded)

    def adopt(self, recorded, per_example_args, grad_enabled):
        """Keeps the traces a worker recorded (`portable` forms, by example index) for
        the batch `per_example_args`, as they came: `decode_all` (before the next
        workers are forked) or a lookup decodes them, not the loop that computes."""
        for index, (encoded, result, printed) in recorded:
            if len(self.current.entries) >= self.max_examples:
                return
            self._keep(per_example_args[index], grad_enabled, None, result, printed,
                       encoded)

    def replay(self, trace, entry, index):
        """Records `entry`'s nodes for example `index`; returns its result."""
        pending = trace.pending
        memo = trace.memo
        values = []
        for kind, sig, read, depth, payload, outputs, key in entry.steps:
            if kind == _PLAIN:
                node = Node(sig, read(values), depth, index, payload)
                pending.append(node)
                for k, a in outputs:
                    values.append(LazyTensor(node, k, a))
            elif kind == _SEGMENT_MEMO:
                found = memo.get(key)
                if found is None:
                    node = Node(sig, (), 1, index, payload)
                    pending.append(node)
                    found = memo[key] = tuple([LazyTensor(node, k, a) for k, a in outputs])
                values.extend(found)
            else:  # _OP_MEMO
                node = memo.get(key)
                if node is None:
                    inputs = []
                    for const_sig, const_payload, const_aval in payload:
                        const = Node(const_sig, (), 1, index, const_payload)
                        pending.append(const)
                        inputs.append(LazyTensor(const, 0, const_aval))
                    node = memo[key] = Node(sig, tuple(inputs), 2, index)
                    pending.append(node)
                for k, a in outputs:
                    values.append(LazyTensor(node, k, a))
        if entry.printed:
            trace.outputs[index] = list(entry.printed)
        return _rebuild(entry.result, values)


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while many long-lived objects are made at
    once (decoding the traces of a training set, unpickling a worker's plan): every
    collection it would run meanwhile walks objects none of which is garbage. On the
    2-core CPU, decoding the SST training set's 8544 traces spent 1 s of 2.5 in it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_UNREPLAYABLE = object()


def _capture(trace, ex, start, hits):
    """`(steps, refs, result template, printed)` of example `ex`, whose nodes are
    `trace.pending[start:]`, or why it cannot be replayed (a str)."""
    reads = trace.value_reads
    if reads is not None and ex.index in reads:
        return ("its code read the value of a tensor that was not lazy while tracing (a "
                "test on a parameter or buffer, its .item()), which a replay would not "
                "read again")
    returned = []
    collect_lazy(ex.result, returned)
    kept = {id(t.node) for t in returned}  # the nodes the result reads
    captured = _steps(trace, start, kept, hits)
    if captured.__class__ is str:
        return captured
    steps, places, refs = captured
    result = _template(ex.result, places)
    if result is _UNREPLAYABLE:
        return ("it returned something other than tensors, Python scalars and strings, "
                "and lists, tuples or dicts of them")
    return steps, refs, result, tuple(trace.outputs.get(ex.index, ()))


def portable(trace, ex, start, hits):
    """Example `ex`'s trace in a form that a planning worker sends back with its plan
    (signatures by serial, plain data, the values of pure factories such as
    `torch.zeros(n)`, which the worker makes on the CPU for any device), or None for
    one that prints to a file (`TraceCache.adopt` keeps the form)."""
    captured = _capture(trace, ex, start, hits)
    if captured.__class__ is str:
        return None
    steps, all_refs, result, printed = captured
    if any(file is not None for file, _ in printed):
        return None
    encoded = []
    for (kind, sig, _, depth, payload, _, key), refs in zip(steps, all_refs):
        if kind == _OP_MEMO:
            payload = tuple((const_sig.serial, p) for const_sig, p, _ in payload)
        elif not (_plain(payload) or (payload.__class__ is torch.Tensor
                                      and sig.kind == "stack" and sig.fn is not None)):
            return None
        encoded.append((kind, sig.serial, refs, depth, payload, _encode(key)))
    return tuple(encoded), result, printed


def _plain(value):
    """True for None, Python scalars, and tuples and lists of them."""
    cls = value.__class__
    if cls in _SCALARS:
        return True
    return (cls is tuple or cls is list) and all(_plain(v) for v in value)


class _Serial:
    """A signature in a portable memo key: its serial number."""

    __slots__ = ("serial",)

    def __init__(self, serial):
        self.serial = serial


def _encode(key):
    if key is None:
        return None
    return tuple(_Serial(k.serial) if k.__class__ is tracing.Signature else k for k in key)


def _decode(key, signatures):
    if key is None:
        return None
    return tuple(signatures[k.serial] if k.__class__ is _Serial else k for k in key)


def _outputs_of(avals):
    """`((0, aval), (1, aval), ...)` of a signature's out avals, shared."""
    outputs = _outputs.get(avals)
    if outputs is None:
        outputs = _outputs[avals] = tuple(enumerate(avals))
    return outputs


_PLAIN, _SEGMENT_MEMO, _OP_MEMO = 0, 1, 2  # kinds of replay steps


def _memo_key(node, memo):
    """`(kind, key)` when `node` is shared within the batch by the calls on equal
    per-example data (a leaf's word), else None: a segment on data alone
    (dynnet/segments.py, `SegmentTemplate.memoized`) or a deterministic op on
    `torch.tensor` constants (`tracing._data_key`)."""
    sig = node.sig
    if sig.kind == "segment":
        return (_SEGMENT_MEMO, (sig, node.payload)) if sig.fn.memoized else None
    if sig.kind != "op" or not node.inputs:
        return None
    for t in node.inputs:
        if t.node.sig.kind != "const":
            return None
    key = tracing._data_key(sig, node.inputs)
    return (_OP_MEMO, key) if key is not None and memo.get(key) is node else None


def _steps(trace, start, kept, hits=()):
    """`(steps, places, refs)` for the nodes `trace.pending[start:]`, or why they
    cannot be replayed (a str: one reads a lazy value from outside them that a replay
    could not make again, or holds random numbers drawn while tracing). `places` maps
    the id of each node to the position of its first output among the replay's values.

    A node shared by equal data (see `_memo_key`) is a step that looks the node up in
    the batch's memo and makes it only when it is not there, with the constants it
    reads. Other constants become steps where something first reads them (a constant
    nothing else reads was made for a call whose shared node already existed). A
    shared node made by an earlier example comes where this example called for it
    (`hits`), so that a replay records the nodes in the order the code would, and a
    batch's results are the same bits replayed or traced (the rows of constants may
    move: their values are exact)."""
    steps = []
    all_refs = []  # per step, the positions of its inputs among the replay's values
    places = {}
    count = 0
    memo = trace.memo
    consts = {}  # id -> this example's constants not yet read by a step

    def add(node, refs, memo_key):
        nonlocal count
        avals = node.sig.out_avals
        kind, key, payload = _PLAIN, None, node.payload
        if memo_key is not None:
            kind, key = memo_key
            if kind == _OP_MEMO:  # the constants: (signature, payload, aval)
                payload = tuple((t.node.sig, t.node.payload, t.aval) for t in node.inputs)
        outputs = _outputs_of(avals)
        steps.append((kind, node.sig, _reader(refs), node.depth, payload, outputs, key))
        all_refs.append(refs)
        places[id(node)] = count
        count += len(avals)

    def add_source(source):
        """Adds the step of a node read before it had one: a constant of this example,
        or a shared node made by an earlier one; False when it is neither."""
        const = consts.pop(id(source), None)
        if const is not None:
            add(const, (), None)
            return True
        key = _memo_key(source, memo)
        if key is None:
            return False
        add(source, (), key)
        return True

    called = {}  # position in pending -> memo keys found there
    for position, key in hits:
        called.setdefault(position, []).append(key)
    for position, node in enumerate(trace.pending[start:], start):
        if called:
            for key in called.pop(position, ()):
                source = _shared_node(memo[key])
                if id(source) not in places:
                    add_source(source)
        sig = node.sig
        kind = sig.kind
        if kind == "const":
            consts[id(node)] = node
            continue
        if kind == "stack" and sig.fn is None:
            return ("it made a tensor while tracing from random numbers or other "
                    "tensors (torch.randn(3), say), which a replay would repeat")
        inputs = node.inputs
        memo_key = _memo_key(node, memo) if kind == "segment" or inputs else None
        refs = ()
        if memo_key is None and inputs:
            refs = []
            for t in inputs:
                place = places.get(id(t.node))
                if place is None:
                    if not add_source(t.node):
                        return ("it read a lazy value made before it ran (a tensor given "
                                "as an input, or one kept from another example)")
                    place = places[id(t.node)]
                refs.append(place + t.index)
            refs = tuple(refs)
        add(node, refs, memo_key)
    for position_keys in called.values():  # calls after the last node: the result's
        for key in position_keys:
            source = _shared_node(memo[key])
            if id(source) not in places:
                add_source(source)
    for node_id in kept:  # constants returned as they are
        if node_id in consts:
            add_source(consts[node_id])
    return steps, places, all_refs


def _shared_node(found):
    """The node of a memo entry: a segment's tuple of lazy outputs, or an op's node."""
    return found[0].node if found.__class__ is tuple else found


_outputs = {}  # a signature's out avals -> ((0, aval), (1, aval), ...) (avals are interned)


def _reader(refs):
    """`values -> tuple of values[r] for r in refs` (itemgetter: no Python frame);
    readers of one value or none are shared."""
    if len(refs) > 1:
        return itemgetter(*refs)
    r = refs[0] if refs else -1
    reader = _readers.get(r)
    if reader is None:
        reader = _readers[r] = (lambda values: (values[r],)) if refs else (lambda values: ())
    return reader


_readers = {}  # position (-1: none) -> reader


def _template(value, places):
    """The structure of an example's result, lazy values as their positions."""
    cls = value.__class__
    if cls is LazyTensor:
        place = places.get(id(value.node))
        return _UNREPLAYABLE if place is None else _Lazy(place + value.index)
    if cls in _SCALARS:
        return value
    if cls is tuple or cls is list:
        items = [_template(v, places) for v in value]
        if any(i is _UNREPLAYABLE for i in items):
            return _UNREPLAYABLE
        return (cls, items)
    if cls is dict:
        items = {k: _template(v, places) for k, v in value.items()}
        if any(i is _UNREPLAYABLE for i in items.values()):
            return _UNREPLAYABLE
        return (dict, items)
    return _UNREPLAYABLE


class _Lazy:
    __slots__ = ("position",)

    def __init__(self, position):
        self.position = position


def _rebuild(template, values):
    cls = template.__class__
    if cls is _Lazy:
        return values[template.position]
    if cls is tuple:
        kind, items = template
        if kind is dict:
            return {k: _rebuild(v, values) for k, v in items.items()}
        return kind(_rebuild(v, values) for v in items)
    return template


def modules_among(per_example_args, kwargs):
    """`{id: module}` of the modules among the examples' arguments (a method's
    `self`) and the shared keyword arguments (`f.batch(xs, model=m)`)."""
    modules = {}
    for args in per_example_args:
        for a in args:
            if isinstance(a, torch.nn.Module):
                modules[id(a)] = a
    for v in kwargs.values():
        if isinstance(v, torch.nn.Module):
            modules[id(v)] = v
    return modules


def fingerprint(modules, kwargs):
    """`(state, held)`: what the cache can see of the state an example's trace depends
    on besides the example (the shared keyword arguments and the modules among the
    arguments), and the objects it sees by identity, which the cache holds while it
    keeps that state, so that no other object takes their ids: all but the modules
    themselves, which the cache must not hold (their traces go when they do, see
    `TraceCache`)."""
    held = []
    parts = [_hashable(kwargs, held), tracing.autocast_state()]
    for module in modules:
        for m in module.modules():
            if m is not module:  # a submodule swapped for another is seen
                held.append(m)
            parts.append((id(m), m.training, len(m._forward_hooks),
                          len(m._forward_pre_hooks)))
            for name, v in m.__dict__.items():  # plain settings: `self.depth = 3`
                if name not in _MODULE_FIELDS:  # `self._depth` too
                    seen = _setting(v, held)
                    if seen is None:  # an enum member, a config object: by identity
                        held.append(v)
                        seen = ("object", id(v))
                    parts.append((name, seen))
            for t in m._parameters.values():  # data_ptr: `p.data = ...` replaces a view's
                held.append(t)  # memory (views of parameters key signatures)
                parts.append(None if t is None else (id(t), t.data_ptr(), t.device, t.dtype,
                                                     t.requires_grad))
            for t in m._buffers.values():
                held.append(t)
                parts.append(None if t is None else (id(t), t.data_ptr(), t.device, t.dtype))
    return tuple(parts), held


def _hashable(kwargs, held):
    """The shared keyword arguments as the fingerprint sees them (see `_setting`); any
    other object by identity (a module among them is also seen in full as one of the
    modules)."""
    items = []
    for k, v in sorted(kwargs.items()):
        seen = _setting(v, held)
        if seen is None:
            if not isinstance(v, torch.nn.Module):  # a module is one of the modules
                held.append(v)
            seen = ("object", id(v))
        items.append((k, seen))
    return tuple(items)


_SMALL = 64  # items of a list, tuple or dict seen by value; a longer one by identity
# nn.Module's own bookkeeping in a module's __dict__ (hooks are seen by count, the
# training flag, parameters and buffers on their own)
_MODULE_FIELDS = frozenset(vars(torch.nn.Module())) | {"training"}


def _setting(value, held):
    """How the fingerprint sees a setting: numbers (with their class: 2, 2.0 and True
    differ; numpy's too) and strings, and small lists, tuples and dicts of them, by
    value (one changed in place is seen); a tensor, a longer container (also inside
    those) or a function by identity (appended to `held`); None for anything else (not
    seen)."""
    cls = value.__class__
    if cls in _SCALARS or isinstance(value, numbers.Number):
        return (cls, value)
    if isinstance(value, torch.Tensor):
        held.append(value)
        return ("tensor", id(value))
    if cls is tuple or cls is list or cls is dict:
        if len(value) > _SMALL:
            held.append(value)
            return (cls, id(value))
        items = value.items() if cls is dict else enumerate(value)
        seen = []
        for k, v in items:
            if k.__class__ not in _SCALARS:
                return None
            item = _setting(v, held)
            if item is None:
                return None
            seen.append((k, item))
        return (cls, tuple(seen))
    if callable(value) and not isinstance(value, torch.nn.Module):  # `self.act = torch.tanh`
        held.append(value)
        return ("callable", id(value))
    return None
