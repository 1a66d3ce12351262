"""Segments at run time: a straight-line run of tensor code recorded as ONE node.

The converter (converter/passes/segments.py) outlines runs of tensor statements
into local functions and calls `segment(fn, inputs)` before running them. The
first call for an input key (the code, the avals of lazy inputs, the identity of
modules and shared tensors, the value of Python scalars) runs `fn` while
capturing the nodes it records, and keeps them as a `SegmentTemplate` when the
run was pure tensor code. Later calls with the same key record a single node; a
group of such nodes runs the template's ops on the stacked batch through the
batching rules, op after op, with no per-example Python at all.

Anything else (a call of user code, a pause, a side effect, a per-example Python
object among the inputs) makes `segment` simply run `fn`, op by op, its calls
completing at once.
"""

import torch

from dynnet import tracing
from dynnet.backends.gather import data_tensor, to_device
from dynnet.backends.rules import deterministic
from dynnet.lazy import LazyTensor, Node
from dynnet.tracing import SHAREABLE_DATA, SLOT, Signature, flatten_outputs

_UNSEGMENTABLE = object()
_MAX_KEYS_PER_CODE = 256
_RANDOM_FACTORIES = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.rand_like,
                     torch.randn_like, torch.randint_like, torch.bernoulli, torch.normal,
                     torch.multinomial, torch.poisson}
_STABLE = (torch.nn.Module, torch.Tensor, type, torch.dtype, torch.device,
           type(torch), type(len), type(lambda: 0))

_templates = {}  # key -> SegmentTemplate or _UNSEGMENTABLE
# id(segment code) -> (that code, the SegmentTemplate it recorded last). Keyed by id:
# hashing a code object hashes its bytecode (about 150 ns); the entry keeps the code
# alive, so no other object takes its id.
_recent = {}
_MISS = object()  # what `SegmentTemplate.replay` returns for a call of another key
_grad_enabled = torch.is_grad_enabled
_active = tracing._active  # the traces being recorded (the list itself, never rebound)
_keys_per_code = {}


class _Abort(Exception):
    """Raised inside a capture run when the code is not straight-line tensor code."""


class _DataRef:
    """In a template: the payload is data input `k` of each example (of `aval`)."""

    __slots__ = ("k", "aval")

    def __init__(self, k):
        self.k = k
        self.aval = None


def _compile(signature, lines, names):
    """The function `def {signature}:` with body `lines`, its globals `names`."""
    source = f"def {signature}:\n" + "".join(f"    {line}\n" for line in lines)
    exec(compile(source, "<dynnet segment>", "exec"), names)
    return names[signature.split("(")[0]]


class DataColumns:
    """A group's data inputs by position rather than by row (dynnet/plans.py sends them
    so): `columns[k]` holds every row's data input k, as an `array` of int64 ('q') or
    float64 ('d') when they are all ints or all floats, else as a list."""

    __slots__ = ("columns",)

    def __init__(self, columns):
        self.columns = columns

    def column(self, k, aval):
        """Data input k of every row as one tensor of `aval`'s dtype and device."""
        values = self.columns[k]
        if values.__class__ is list:
            return to_device(torch.tensor(values, dtype=aval.dtype), aval.device)
        dtype = torch.int64 if values.typecode == "q" else torch.float64
        out = torch.frombuffer(values, dtype=dtype) if len(values) else torch.empty(0, dtype=dtype)
        return to_device(out, aval.device, aval.dtype)


class SegmentTemplate:
    """The ops one segment records, replayable on a stacked batch.

    Attributes:
      sig: the signature of the segment's nodes (kind "segment", fn = self).
      ops: per captured node, `(signature, payload, refs)`; a ref `(-1, k)` is the
        segment's k-th lazy input, `(j, i)` is output i of op j.
      outputs: per output of `fn`, `("ref", ref)` or `("const", value)`.
      record: `record(lazies, data, trace) -> outputs`, compiled for this template:
        records one node for the current example and returns fn's outputs.
      replay: `replay(inputs, data, trace) -> outputs or MISS`: `record` after checking
        that the call has this template's key (see `compile_replay`).
    """

    def __init__(self, name, in_avals, ops, outputs, origin, data=()):
        self.ops = ops
        self.outputs = outputs
        self.lazy_outputs = []  # distinct (op, output) refs, in order
        self._collect(outputs)
        self.sig = Signature("segment", self, name, None, in_avals, origin)
        self.sig.grad_enabled = torch.is_grad_enabled()
        self.sig.out_avals = tuple(ops[j][0].out_avals[i] for j, i in self.lazy_outputs)
        # Calls on data alone (no lazy input) of deterministic ops give equal values for
        # equal data: within a batch, they record one node per distinct data (a tree's
        # leaves for the same word), whose row every such call reads.
        self.memoized = (not in_avals and all(d.__class__ in SHAREABLE_DATA for d in data)
                         and all(sig.kind != "op" or deterministic(sig, guards=False)
                                 for sig, _, _ in ops))
        self.record = self._compile_recorder()
        self.replay = None
        self._steps = None  # prepared on first replay
        self._run = None  # compiled on first batched run (see _compile_run)
        self.writes = {}  # see _prepare_steps

    def _collect(self, entries):
        for kind, ref in entries:
            if kind == "ref":
                if ref[0] >= 0 and ref not in self.lazy_outputs:
                    self.lazy_outputs.append(ref)
            elif kind != "const":  # a tuple or list of entries
                self._collect(ref)

    def _recording(self):
        """Source lines that record one node for the current example and return fn's
        outputs around its lazy outputs, with the names they need: they read the lazy
        inputs as `l0, l1, ...` and as the sequence `L`, the data inputs as `D`, and the
        trace as `trace`. The node's depth is 1 + the deepest input's."""
        constants = []

        def expr(entry):
            kind, ref = entry
            if kind == "const":
                constants.append(ref)
                return f"C{len(constants) - 1}"
            if kind == "ref":
                return f"l{ref[1]}" if ref[0] < 0 else f"t{self.lazy_outputs.index(ref)}"
            items = ", ".join(expr(e) for e in ref) + ("," if len(ref) == 1 else "")
            return f"({items})" if kind is tuple else f"[{items}]"

        n_in = len(self.sig.in_avals)
        made = "".join(f"t{k}, " for k in range(len(self.lazy_outputs)))
        lines = []
        if self.memoized:  # the lazy outputs of an earlier call on equal data
            lines += ["key = (sig, D)", "found = trace.memo.get(key)", "if found is not None:",
                      "    if trace.hits is not None:",  # for dynnet/example_traces.py
                      "        trace.hits.append((len(trace.pending), key))",
                      f"    {made}= found", f"    return {expr((tuple, self.outputs))}"]
        lines += ["depth = l0.node.depth" if n_in else "depth = 0"]
        for k in range(1, n_in):
            lines += [f"d = l{k}.node.depth", "if d > depth:", "    depth = d"]
        lines += ["node = Node(sig, L, depth + 1, trace.instance, D)",
                  "trace.pending.append(node)"]
        lines += [f"t{k} = T(node, {k}, A{k})" for k in range(len(self.lazy_outputs))]
        if self.memoized:
            lines.append(f"trace.memo[key] = ({made})")
        lines.append(f"return {expr((tuple, self.outputs))}")
        names = {"T": LazyTensor, "Node": Node, "sig": self.sig}
        names.update((f"A{k}", a) for k, a in enumerate(self.sig.out_avals))
        names.update((f"C{k}", c) for k, c in enumerate(constants))
        return lines, names

    def _compile_recorder(self):
        """`record(lazies, data, trace) -> outputs` for this template's structure."""
        lines, names = self._recording()
        n_in = len(self.sig.in_avals)
        if n_in:
            lines.insert(0, f"{''.join(f'l{k}, ' for k in range(n_in))}= L")
        return _compile("record(L, D, trace)", lines, names)

    def compile_replay(self, inputs, data):
        """Sets `replay(inputs, data, trace)`: `record` for a call with these `inputs`
        and `data` (the call this template was captured from) or any call with the same
        key (see `_key`), else `MISS`. It checks the key's entries input by input,
        without building the key: lazy inputs by class and aval, modules and shared
        tensors by identity, Python scalars by class and value, data by class, and the
        grad mode. A segment's code always takes as many inputs and data. (`type(v) is C`
        implies `v.__class__ is C`, the test of `_key`, and is faster.)"""
        lines, names = self._recording()
        names.update(MISS=_MISS, grad=_grad_enabled, G=self.sig.grad_enabled)
        unpacked, tests = [], []
        lazy_exprs = []  # how the replay reads each lazy input, in key order
        first_seen = {}  # id of a lazy input -> the expression that reads it first

        def check(expr, v, p):
            """Tests that the value at `expr` matches input value `v` (at position p)."""
            if v.__class__ is LazyTensor:
                k = len(lazy_exprs)
                lazy_exprs.append(expr)
                first = first_seen.setdefault(id(v), expr)
                if first != expr:  # the same value as an earlier input (see `_key`)
                    tests.append(f"{expr} is {first}")
                    return
                tests.append(f"type({expr}) is T and {expr}.aval is IA{k}")
                names[f"IA{k}"] = v.aval
            elif _input_kinds[v.__class__] is _IDENTITY:
                tests.append(f"{expr} is K{p}")
                names[f"K{p}"] = v
            elif _input_kinds[v.__class__] is _VALUE:
                tests.append(f"type({expr}) is KC{p} and {expr} == K{p}")
                names[f"K{p}"], names[f"KC{p}"] = v, v.__class__
                if v.__class__ is float and v == 0.0:  # and its sign (see `_key_input`)
                    tests.append(f"signed_zero({expr}) is KS{p}")
                    names["signed_zero"], names[f"KS{p}"] = tracing.signed_zero, \
                        tracing.signed_zero(v)
            else:  # a tuple or list: its class, length and items
                tests.append(f"type({expr}) is {v.__class__.__name__} and "
                             f"len({expr}) == {len(v)}")
                for i, x in enumerate(v):
                    check(f"{expr}[{i}]", x, f"{p}_{i}")

        for p, v in enumerate(inputs):
            if v.__class__ is LazyTensor:
                unpacked.append(f"l{len(lazy_exprs)}")
                check(unpacked[-1], v, p)
            else:
                unpacked.append(f"v{p}")
                check(f"v{p}", v, p)
        for j, d in enumerate(data):
            tests.append(f"type(D[{j}]) is DC{j}")
            names[f"DC{j}"] = d.__class__
            if d.__class__ is list or d.__class__ is tuple:  # its length and item class
                tests.append(f"len(D[{j}]) == {len(d)} and "
                             f"all(type(v) is DI{j} for v in D[{j}])")
                names[f"DI{j}"] = d[0].__class__
        tests.append("grad() is G")
        head = [f"{''.join(f'{u}, ' for u in unpacked)}= I" if unpacked else "pass",
                f"if not ({' and '.join(tests)}):",
                "    return MISS",
                f"L = ({''.join(f'{e}, ' for e in lazy_exprs)})"]
        head += [f"l{k} = {e}" for k, e in enumerate(lazy_exprs) if e != f"l{k}"]  # nested
        self.replay = _compile("replay(I, D, trace)", head + lines, names)

    def run_batched(self, inputs, size, data=None, outs=None):
        """The segment's lazy outputs for a group: its ops on the stacked inputs.

        `data` holds each example's data inputs (the nodes' payloads), in row order.
        `outs` (outside autograd only) maps the position of a lazy output to a tensor
        its op may write into instead of a new one (see `writes`); the outputs it
        returns are then those tensors.
        """
        run = self._run or self._compile_run()
        writes = None
        if outs:
            writes = {}
            for p, dest in outs.items():
                write = self.writes.get(p)
                if write is not None:
                    writes[write[0]] = dest
        return run(inputs, size, data, writes)

    def _compile_run(self):
        """`run(inputs, size, data, writes) -> lazy outputs`: the template's ops on a
        group's stacked inputs as straight-line code (an interpreted loop over the ops
        cost 35 µs of Python per call of the tree-LSTM's cell at 60 rows, 11%).
        `writes` maps an op that may write its result into a given tensor to that
        tensor, or is None."""
        steps = self._steps or self._prepare_steps()
        writers = {j: run_out for j, run_out in self.writes.values()}
        names = {"step_leaves": step_leaves}
        lines = []

        def var(ref):
            return f"I[{ref[1]}]" if ref[0] < 0 else f"v{ref[0]}_{ref[1]}"

        for j, ((sig, _, refs), (run, _, payload)) in enumerate(zip(self.ops, steps)):
            names[f"R{j}"], names[f"P{j}"] = run, payload
            slots = f"[{''.join(var(r) + ', ' for r in refs)}]"
            targets = "".join(f"v{j}_{i}, " for i in range(len(sig.out_avals)))
            if run is not None and sig.out_template is SLOT:
                line = f"v{j}_0 = R{j}({slots}, size)"
            elif run is not None and sig.tuple_out:
                line = f"{targets}= R{j}({slots}, size)"
            else:  # nested outputs, per-example data, a constant
                line = f"{targets}= step_leaves(R{j}, {slots}, size, P{j}, data)"
            if j in writers:
                names[f"W{j}"] = writers[j]
                lines += [f"w = writes.get({j}) if writes else None", "if w is not None:",
                          f"    v{j}_0 = W{j}({slots}, size, w)", "else:", f"    {line}"]
            else:
                lines.append(line)
        lines.append(f"return [{''.join(var(r) + ', ' for r in self.lazy_outputs)}]")
        self._run = _compile("run(I, size, data, writes)", lines, names)
        return self._run

    def _prepare_steps(self):
        """Per op `(run, refs, payload)`: the op's prepared group call (see
        `backends.rules.prepare`), or None with the data ref or constant it makes."""
        from dynnet.backends.rules import prepare

        steps = []
        for sig, payload, refs in self.ops:
            aval = sig.out_avals[0] if sig.out_avals else None
            if sig.kind == "op":
                steps.append((prepare(sig), refs, None))
            elif payload.__class__ is _DataRef:
                payload.aval = aval
                steps.append((None, refs, payload))
            else:
                value = payload if sig.kind == "stack" else torch.tensor(
                    payload, dtype=aval.dtype, device=aval.device)
                steps.append((None, refs, value))
        # lazy output p -> (its op, `run(slots, size, out)`) when that op can write its
        # result into a given tensor: the group's arena rows (dynnet/plans.py)
        self.writes = {}
        for p, (j, i) in enumerate(self.lazy_outputs):
            sig = self.ops[j][0]
            make = getattr(sig.rule, "prepare_out", None) if sig.kind == "op" else None
            run_out = make(sig) if make is not None and i == 0 else None
            if run_out is not None and self.lazy_outputs.count((j, i)) == 1:
                self.writes[p] = (j, run_out)
        self._steps = steps
        return steps

    def __call__(self, *inputs, data=()):
        """One example, unbatched (used to locate a failing example)."""
        outs = self.run_batched([x.unsqueeze(0) for x in inputs], 1, [data])
        return tuple(o[0] for o in outs)


def step_leaves(run, slots, size, payload, data):
    """The output leaves of one prepared template step for a group of `size` rows: an
    op's call on `slots`, or the rows' data, or a constant."""
    if run is not None:  # an op
        out = run(slots, size)
        if isinstance(out, torch.Tensor):
            return [out]
        leaves = []
        flatten_outputs(out, leaves)
        return leaves
    if payload.__class__ is _DataRef:  # per-example scalars
        return [data.column(payload.k, payload.aval) if data.__class__ is DataColumns else
                data_tensor([d[payload.k] for d in data], payload.aval)]
    return [payload.expand(size, *payload.shape)]  # the same value in every row


_VALUE, _IDENTITY, _UNSTABLE = range(3)
_input_kinds = {}  # type (other than LazyTensor) -> how inputs of that type enter the key


def _input_kind(cls):
    if cls in (int, float, bool, str, type(None), torch.device, torch.dtype, torch.Size):
        return _VALUE  # immutable: keyed by value (a new torch.device each call is common)
    return _IDENTITY if issubclass(cls, _STABLE) else _UNSTABLE


def _key(fn, inputs, data=(), numbers=None):
    """The cache key of a segment call and its lazy inputs, or (None, None) when an input
    is a per-example Python object or a data input is not a Python scalar. `numbers`,
    if given, receives the key positions that hold int or float input values.

    The key is the code, the grad mode, then per input the aval of a lazy value, the
    id of a stable object (module, shared tensor, class, ...) or the class and value of
    an immutable scalar; a tuple or list (`states`, `[h for h, _ in states]`) is its
    class and length, then its items by the same rules (but a Python scalar in one
    makes the call unsegmentable: lists of numbers are per-example data). Lazy values
    are the segment's inputs in that order; one met again (`states[0][0]` is `hs[0]`) is
    keyed as `_SAME` and the position where it was first met, so a template is only
    replayed on calls that share values the same way. Then comes the class of each data
    input. An entry's first item (an Aval, an int, a class, `_SAME`) tells its kind, so
    different layouts never give equal keys.
    """
    key = [fn.__code__, _grad_enabled()]
    lazies = []
    seen = {}  # id of a lazy input -> its first position
    for v in inputs:
        if not _key_input(v, key, lazies, seen, numbers):
            return None, None
    for d in data:
        cls = d.__class__
        if cls is int or cls is float or cls is bool:
            key.append(cls)
            continue
        item = tracing.data_item_class(d)  # a list of numbers: `torch.tensor(targets)`
        if item is None:
            return None, None
        key.append((cls, len(d), item))
    return tuple(key), lazies


_SAME = object()  # in a key: this lazy input is the one first met at the next position


def _key_input(v, key, lazies, seen, numbers=None):
    """Appends input `v`'s key entries (see `_key`); False for a per-example object."""
    cls = v.__class__
    if cls is LazyTensor:
        first = seen.get(id(v))
        if first is None:
            seen[id(v)] = len(lazies)
            key.append(v.aval)
        else:
            key.append(_SAME)
            key.append(first)
        lazies.append(v)
        return True
    kind = _input_kinds.get(cls)
    if kind is None:
        kind = _input_kinds[cls] = _input_kind(cls)
    if kind is _IDENTITY:
        key.append(id(v))
    elif kind is _VALUE:
        key.append(cls)
        if numbers is not None and (cls is int or cls is float):
            numbers.append(len(key))
        key.append(v)
        if cls is float and v == 0.0:  # -0.0 == 0.0 for Python, not for copysign or 1 / x
            key.append(tracing.signed_zero(v))
    elif cls is tuple or cls is list:
        key.append(cls)
        key.append(len(v))
        return all(_key_item(x, key, lazies, seen) for x in v)
    else:
        return False
    return True


def _key_item(v, key, lazies, seen):
    """`_key_input` for an item of a tuple or list: Python scalars there are per-example
    data (`ids`, a sentence's word ids), which would make one template per example."""
    if _input_kinds.get(v.__class__) is _VALUE:
        return False
    return _key_input(v, key, lazies, seen)


def _distinct(lazies):
    """True when no lazy value is among `lazies` twice (a loop's state must not be)."""
    return len(lazies) < 2 or len(set(map(id, lazies))) == len(lazies)


def segment(fn, inputs, data=()):
    """Records the segment `fn(*inputs, *data)` as one node, or runs it op by op.

    `data` holds per-example Python scalars that the segment turns into tensors
    (`torch.tensor(tree.word_id)`); they vary per example without changing the key.
    The template last used by the same code is tried first (`replay`), without
    building the key.
    """
    if not _active:
        return fn(*inputs, *data)
    recent = _recent.get(id(fn.__code__))
    if recent is not None:
        outputs = recent[1].replay(inputs, data, _active[-1])
        if outputs is not _MISS:
            return outputs
    return _segment(fn, inputs, data, _active[-1])


def _segment(fn, inputs, data, trace):
    """`segment` through the key: records, captures a template or runs op by op."""
    numbers = []
    key, lazies = _key(fn, inputs, data, numbers)
    if key is None:
        if _profiles:
            _note(fn, _unkeyable(fn, inputs, data))
        return fn(*inputs, *data)
    template = _templates.get(key)
    if template.__class__ is SegmentTemplate:
        _recent[id(fn.__code__)] = (fn.__code__, template)
        return template.record(lazies, data, trace)
    if template is None and (lazies or data):
        if not _numbers_vary(key, numbers):
            return _capture(fn, inputs, data, key, lazies, trace)
        template = _UNSEGMENTABLE
    if template is _UNSEGMENTABLE and _profiles:
        reason = _reasons.get(key, _NUMBERS_VARY)
        _note(fn, _numbers_reason(fn, inputs) if reason is _NUMBERS_VARY else reason)
    return fn(*inputs, *data)


# -------------------- why a segment ran op by op (dynnet.profile) --------------------

_reasons = {}  # key -> why its calls run op by op (for dynnet.profile)


def _forget():
    """Drops every template (with the signatures they hold; tracing.forget_signatures)."""
    for table in (_templates, _recent, _keys_per_code, _reasons, _by_numbers):
        table.clear()


tracing._forget_hooks.append(_forget)
_profiles = []  # dynnet.runtime's list of active profiles (set on import of runtime)


def _note(fn, reason):
    """Counts a call of segment `fn` that ran op by op, with why, in the profile."""
    code = fn.__code__
    entry = _profiles[-1].segment_fallbacks.setdefault(
        (code.co_filename, code.co_firstlineno), [reason, 0])
    entry[1] += 1


def _numbers_reason(fn, inputs):
    """Why a segment whose numbers vary runs op by op, naming the number inputs."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    numbers = [_input_name(name) for name, v in zip(names, inputs)
               if v.__class__ is int or v.__class__ is float]
    return (f"{', '.join(numbers) or 'a Python number'} differs per example (over "
            f"{_MAX_NUMBERS} values; a template per value would make a group per value); "
            "as torch.tensor(...) it would be per-example data of the segment")


def _input_name(name):
    """A segment input as the user wrote it (the converter names hoisted reads)."""
    if name.startswith("dn__len"):
        return "a len(...)"
    if name.startswith("dn__callee"):
        return "a module picked by index"
    if name.startswith("dn__"):
        return "an attribute of self"
    return f"`{name}`"


def _unkeyable(fn, inputs, data):
    """Why `_key` found no key: the input that is a per-example Python object."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    for name, v in zip(names, inputs):
        if not _key_input(v, [], [], {}):
            what = _input_name(name)
            if v.__class__ in (tuple, list):
                return (f"{what} is a {v.__class__.__name__} holding Python numbers or "
                        "objects, which vary per example")
            return f"{what} is a per-example Python object ({type(v).__name__})"
    for d in data:
        if tracing.data_item_class(d) is None:
            return (f"a torch.tensor(...) argument is a {type(d).__name__}, not a Python "
                    "number or a flat list of numbers")
    return "its inputs cannot be keyed"


_MAX_NUMBERS = 8  # templates of one key that differ only in numbers (see _numbers_vary)
_NUMBERS_VARY = object()  # the reason of keys retired by _numbers_vary (see _numbers_reason)
_by_numbers = {}  # key without its numbers -> the keys with numbers seen, or None


def _numbers_vary(key, numbers):
    """True once more than `_MAX_NUMBERS` keys differ from `key` only in int or float
    inputs (`x * w` with a weight per example). Each template makes its own groups, so
    the call then runs op by op, where `+ - * /` with a number join into one group
    whatever the number (backends/numbers.py); the templates already made for those
    keys are retired."""
    if not numbers:
        return False
    relaxed = list(key)
    for position in numbers:
        relaxed[position] = None
    relaxed = tuple(relaxed)
    keys = _by_numbers.get(relaxed, ())
    if keys is None:
        return True
    if len(keys) < _MAX_NUMBERS:
        _by_numbers[relaxed] = (*keys, key)
        return False
    _by_numbers[relaxed] = None
    for old in keys:
        _templates[old] = _UNSEGMENTABLE
        _reasons[old] = _NUMBERS_VARY
    _recent.pop(id(key[0]), None)
    return True


class _Datum:
    """Marks data input `k` while a segment is captured (see `data_value`)."""

    __slots__ = ("value", "k")

    def __init__(self, value, k):
        self.value = value
        self.k = k


def _capture(fn, inputs, data, key, lazies, trace):
    """Runs `fn` once, recording normally, and keeps its ops as a template."""
    code = fn.__code__
    count = _keys_per_code.get(code, 0)
    if count >= _MAX_KEYS_PER_CODE:
        _unsegmentable(fn, key, f"over {_MAX_KEYS_PER_CODE} different keys (input shapes, "
                                "modules, Python values)")
        return fn(*inputs, *data)
    _keys_per_code[code] = count + 1
    start = len(trace.pending)
    previous = tracing._capture
    tracing._capture = captured = []
    aborted = None
    try:
        outputs = fn(*inputs, *[_Datum(d, k) for k, d in enumerate(data)])
    except _Abort as abort:
        aborted = str(abort) or "it is not straight-line tensor code"
    finally:
        tracing._capture = previous
    if aborted is not None:
        tracing._capture_data.clear()
        del trace.pending[start:]  # pure, unreferenced nodes; nothing else happened yet
        _unsegmentable(fn, key, aborted)
        return fn(*inputs, *data)
    template = _template(code, lazies, captured, outputs, data)
    tracing._capture_data.clear()
    if template is not None:
        # the key holds ids of modules and shared tensors: keep them alive so that no
        # other object can take an id while the template is cached
        template.keepalive = _stable_objects(inputs, [])
        template.compile_replay(inputs, data)
        _recent[id(code)] = (code, template)
    if template is None:
        _unsegmentable(fn, key, "its ops or outputs cannot be replayed (an output that is "
                                "not a tensor or constant, a random op, a value read from "
                                "outside the segment)")
    else:
        _templates[key] = template
    return outputs


def _unsegmentable(fn, key, reason):
    """Marks `key`'s calls as running op by op, for `reason` (shown by dynnet.profile)."""
    _templates[key] = _UNSEGMENTABLE
    _reasons[key] = reason
    if _profiles:
        _note(fn, reason)


def _stable_objects(values, out):
    """`out` extended with the objects among `values` (and in their tuples and lists)
    that a key holds by id."""
    for v in values:
        if v.__class__ is tuple or v.__class__ is list:
            _stable_objects(v, out)
        elif isinstance(v, _STABLE):
            out.append(v)
    return out


_PURE_CONSTANTS = (int, float, bool, str, type(None), torch.Size, torch.dtype, torch.device)
_AMBIGUOUS = object()


def _template(code, lazies, captured, outputs, data=()):
    """A SegmentTemplate of the captured nodes, or None when one cannot be replayed."""
    position = {id(n): j for j, n in enumerate(captured)}
    inputs = {id(t): k for k, t in enumerate(lazies)}
    # an input read through another lazy object of the same output: its position, or
    # _AMBIGUOUS when inputs at several positions hold that output (a word's shared
    # embedding at two places of a list: other calls of the template get other values
    # there, so the position must be the object's, see `_key`)
    input_nodes = {}
    for k, t in enumerate(lazies):
        at = (id(t.node), t.index)
        input_nodes[at] = k if input_nodes.get(at, k) == k else _AMBIGUOUS
    ops = []
    for node in captured:
        sig = node.sig
        if sig.kind not in ("op", "const", "stack") or sig.fn in _RANDOM_FACTORIES:
            return None
        refs = []
        for t in node.inputs:
            j = position.get(id(t.node))
            if j is not None:
                refs.append((j, t.index))
                continue
            k = inputs.get(id(t))
            if k is None:
                k = input_nodes.get((id(t.node), t.index))
            if k is None or k is _AMBIGUOUS:
                return None  # reads a lazy value that is not an input, or not surely which
            refs.append((-1, k))
        payload = node.payload
        if isinstance(payload, torch.Tensor) and payload.requires_grad:
            return None
        if id(node) in tracing._capture_data:
            payload = _DataRef(tracing._capture_data[id(node)])
        ops.append((sig, payload, tuple(refs)))
    outs = []

    def describe(value):
        if value.__class__ is LazyTensor:
            j = position.get(id(value.node))
            if j is not None:
                return ("ref", (j, value.index))
            if id(value) in inputs:
                return ("ref", (-1, inputs[id(value)]))
            return None
        if value.__class__ is tuple or value.__class__ is list:
            items = [describe(v) for v in value]
            return None if None in items else (value.__class__, items)
        if isinstance(value, _PURE_CONSTANTS):
            return ("const", value)
        return None

    for value in outputs:
        entry = describe(value)
        if entry is None:
            return None
        outs.append(entry)
    name = f"segment {code.co_name}@{code.co_firstlineno}"
    origin = (code.co_filename, code.co_firstlineno)
    return SegmentTemplate(name, tuple(t.aval for t in lazies), ops, outs, origin, data)


def seg_call(fn, /, *args, **kwargs):
    """A call inside a segment: while capturing, torch ops are recorded and anything
    else aborts the capture; otherwise the call completes at once (`call_now`)."""
    if tracing._capture is None:
        from dynnet.converter.operators.call import call_now

        return call_now(fn, *args, **kwargs)
    cls = fn.__class__
    from dynnet.lazy import LazyMethod

    if cls is LazyMethod:
        from dynnet.converter.operators.call import _METHOD_NEEDS

        if fn.name in _METHOD_NEEDS:
            raise _Abort(f"it needs a value (Tensor.{fn.name})")
        return tracing.record_method(fn.name, fn.tensor, args, kwargs)
    from dynnet.converter.operators.call import _classify, _record, _record_if_lazy

    try:
        hash(fn)
    except TypeError:
        raise _Abort(f"it calls {tracing.op_name(fn)}, which is not a torch op") from None
    handler = _classify(fn)
    if handler is _record or handler is _record_if_lazy:
        if fn in _RANDOM_FACTORIES:
            raise _Abort(f"it draws random numbers ({tracing.op_name(fn)})")
        return handler(fn, args, kwargs)
    if fn in _PURE_BUILTINS:
        return fn(*args, **kwargs)
    raise _Abort(f"it calls {tracing.op_name(fn)}, which is not a torch op")


_PURE_BUILTINS = {len, abs, tuple, list, isinstance, getattr, sum, zip, enumerate, range,
                   reversed}



# -------------------- loops --------------------


class LoopTemplate:
    """A `while` loop of straight-line tensor code, run as one masked batched loop.

    The group's rows that still pass the test run the body (on those rows only, so a
    finished row is never computed again), until no row passes. Each row leaves
    the loop exactly when its own example would.

    Attributes:
      sig: the signature of the loop's nodes (kind "loop", fn = self).
      test, body: SegmentTemplates of the test (one bool scalar) and of the body
        (the new state); both take the state then the loop's constant inputs.
      n_state: how many lazy inputs are state (the rest are constants).
    """

    def __init__(self, name, test, body, n_state, origin):
        self.test = test
        self.body = body
        self.ops = test.ops + body.ops
        self.n_state = n_state
        in_avals = test.sig.in_avals
        self.sig = Signature("loop", self, name, None, in_avals, origin)
        self.sig.grad_enabled = torch.is_grad_enabled()
        self.sig.out_avals = in_avals[:n_state]

    def record(self, lazies, trace):
        depth = max(t.node.depth for t in lazies) + 1
        node = Node(self.sig, lazies, depth, trace.instance)
        trace.pending.append(node)
        return tuple(LazyTensor(node, k, a) for k, a in enumerate(self.sig.out_avals))

    def run_batched(self, inputs, size, data=None):
        state, consts = list(inputs[:self.n_state]), inputs[self.n_state:]
        rows = torch.arange(size, device=state[0].device)
        while True:
            args = [x.index_select(0, rows) for x in state + list(consts)]
            keep = self.test.run_batched(args, len(rows))[0].reshape(-1)
            rows = rows[keep]
            if rows.numel() == 0:
                return state
            args = [x.index_select(0, rows) for x in state + list(consts)]
            new = self.body.run_batched(args, len(rows))
            state = [x.index_copy(0, rows, n) for x, n in zip(state, new)]

    def __call__(self, *inputs, data=()):
        outs = self.run_batched([x.unsqueeze(0) for x in inputs], 1)
        return tuple(o[0] for o in outs)


def while_segment(test_fn, body_fn, state, consts):
    """Records `while test_fn(*state, *consts): state = body_fn(...)` as one node.

    Returns the final state, or None when the loop must run as Python (then nothing
    was recorded).
    """
    trace = tracing.current()
    if trace is None or not state or any(v.__class__ is not LazyTensor for v in state):
        return None
    key, lazies = _key(body_fn, state + consts)
    if key is None:
        return None
    template = _templates.get(key)
    if template is None:
        if not _distinct(lazies):
            return None
        template = _templates[key] = _capture_loop(test_fn, body_fn, state, consts, lazies,
                                                   trace)
    if template is _UNSEGMENTABLE:
        return None
    return template.record(lazies, trace)


def _capture_loop(test_fn, body_fn, state, consts, lazies, trace):
    """Templates of one test and one body iteration, captured on this example's values
    and then dropped from the trace (the loop node replaces them)."""
    start = len(trace.pending)
    previous = tracing._capture
    try:
        templates = []
        for fn in (test_fn, body_fn):
            tracing._capture = captured = []
            outputs = fn(*state, *consts)
            if fn is test_fn:
                outputs = (outputs,)
            template = _template(fn.__code__, lazies, captured, outputs)
            if template is None or len(template.lazy_outputs) != len(outputs):
                return _UNSEGMENTABLE
            templates.append(template)
    except _Abort:
        return _UNSEGMENTABLE
    finally:
        tracing._capture = previous
        del trace.pending[start:]
    test, body = templates
    test_aval = test.sig.out_avals[0]
    if test_aval.dtype != torch.bool or test_aval.shape.numel() != 1 or \
            tuple(body.sig.out_avals) != tuple(t.aval for t in state):
        return _UNSEGMENTABLE  # a shape-changing body or a non-scalar test
    code = body_fn.__code__
    template = LoopTemplate(f"while loop {code.co_name}@{code.co_firstlineno}", test, body,
                            len(state), (code.co_filename, code.co_firstlineno))
    template.keepalive = _stable_objects(consts, [])
    return template
