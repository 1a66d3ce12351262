"""The batch driver: resumable examples over one shared trace.

Converted functions are generator functions. A converted call of another user
function runs the callee's first step at once (a leaf call usually finishes right
there) and otherwise yields `Suspend(gen=..., first=...)`: the driver pushes that
generator on the example's own stack, so user recursion never grows Python's stack
by more than a few frames. A test on a lazy value yields `Suspend(lazies=...)`: the
example pauses. Every example runs
until it pauses or finishes, the pending graph of all of them executes batched,
the needed values are read back, and the paused examples resume.

A function whose calls have not paused runs its direct twin instead (no generator;
converter/direct.py); `wait` below is what the twin does where the generator would
yield.
"""

import gc
import sys
import time

import torch

from dynnet import config, segments, tracing
from dynnet.backends import arena, execute_group
from dynnet.backends.gather import index_tensor
from dynnet.errors import where
from dynnet.recurrences import fuse_recurrences
from dynnet.scheduler import get_strategy

tracing.register_internal_file(__file__)


class Suspend:
    """What converted code yields to the driver.

    Either `gen` (a generator to run to completion, whose return value is sent
    back) or `lazies` (lazy tensors whose values are needed) with `post`, which
    turns their values into what is sent back; `scalar` (bool, int or float)
    marks the common case of one lazy scalar.
    """

    __slots__ = ("gen", "lazies", "post", "scalar", "first")

    def __init__(self, gen=None, lazies=(), post=None, scalar=None, first=None):
        self.gen = gen
        self.lazies = lazies
        self.post = post
        self.scalar = scalar
        self.first = first  # what `gen` already yielded (its first step ran inline)


class Profile:
    """Counters of the batches run inside `dynnet.profile()`."""

    def __init__(self):
        self.batches = 0
        self.nodes = 0
        self.groups = 0
        self.rounds = 0
        self.total_seconds = 0.0
        self.execute_seconds = 0.0
        self.schedule_seconds = 0.0
        self.group_sizes = {}  # Signature -> sizes of its groups, in execution order
        # (file, line) of a segment -> [why its calls ran op by op, how many calls]
        self.segment_fallbacks = {}
        self.planned_batches = 0  # batches run from a worker's plan (dynnet/workers.py)
        # batches run from the plan kept for a batch seen before (replayed_batches.py)
        self.replayed_batches = 0
        self.replayed = 0  # examples replayed from their trace, here or in a worker
        self.trace_misses = {}  # why examples of a reuse_traces function were not kept
        self.recorded = 0  # examples whose traces were kept (example_traces.py)
        self.worker_misses = {}  # why a batch the worker could not plan -> how many
        self.fork_seconds = 0.0  # starting worker processes (dynnet/workers.py)
        self.wait_seconds = 0.0  # waiting for a worker's plan

    def groups_of(self, fn):
        """Sizes of the groups that ran op or module `fn` (also inside segments and
        loops; a fused recurrence counts one row per sequence)."""
        out = []
        for sig, sizes in self.group_sizes.items():
            uses = sig.fn is fn
            if sig.kind == "numbers":
                uses = sig.fn.fn is fn
            elif sig.kind == "segment" or sig.kind == "loop":
                uses = any(op_sig.fn is fn for op_sig, _, _ in sig.fn.ops)
            if uses:
                out.extend(sizes)
        return out

    @property
    def fallbacks(self):
        """One line per segment whose calls ran op by op instead of as one node:
        `file:line: why (N calls)`. Each is a place where the code falls off the fast
        path (see docs/control_flow.md, segments)."""
        lines = [f"{where(origin)}: {reason} ({calls} calls)"
                 for origin, (reason, calls) in self.segment_fallbacks.items()]
        by_site = {}  # ops whose static arguments hold a tensor: per user file:line
        for sig in self.group_sizes:
            if sig.kind == "op" and tracing.holds_tensor(sig.template):
                by_site.setdefault(sig.origin, []).append(sig)
        lines += [f"{where(origin)}: {sigs[0].name} ran with {len(sigs)} different tensors "
                  "as a static argument, one batching group each: a tensor computed per "
                  "example from Python values (`weight[i]` with an int i, say) rather than "
                  "from lazy values; derive it from lazy values (`weight[torch.tensor(i)]`)"
                  for origin, sigs in by_site.items() if len(sigs) >= _MANY_STATIC_TENSORS]
        lines += [f"worker: {reason} ({n} batches traced in this process instead)"
                  for reason, n in self.worker_misses.items()]
        lines += [f"reuse_traces: {n} examples not kept, so traced every time: {reason}"
                  for reason, n in self.trace_misses.items()]
        if self.recorded and not self.replayed and self.batches > 1:
            lines.append(f"reuse_traces: {self.recorded} examples kept and none replayed: a "
                         "replay needs the same argument objects again (a loader that "
                         "builds new objects for every batch never replays)")
        return lines

    @property
    def trace_seconds(self):
        """Time outside scheduling and group execution: running the user's code,
        recording, the driver."""
        return self.total_seconds - self.execute_seconds - self.schedule_seconds

    def __repr__(self):
        fallbacks = len(self.fallbacks)
        per_node = 1e6 * self.trace_seconds / max(self.nodes, 1)
        schedule = 1e6 * self.schedule_seconds / max(self.nodes, 1)
        sources = [f"{n} {what}" for n, what in (
            (self.planned_batches, "from a worker's plans"),
            (self.replayed_batches, "from the plans of batches seen before")) if n]
        planned = f" ({', '.join(sources)})" if sources else ""
        replayed = f", replayed={self.replayed}" if self.replayed else ""
        return (f"Profile(batches={self.batches}{planned}, nodes={self.nodes}{replayed}, "
                f"groups={self.groups}, "
                f"rounds={self.rounds}, trace={self.trace_seconds:.4f}s "
                f"({per_node:.2f} us/node), schedule={self.schedule_seconds:.4f}s "
                f"({schedule:.2f} us/node), execute={self.execute_seconds:.4f}s"
                + (f", {fallbacks} fallbacks: see .fallbacks" if fallbacks else "")
                + ")")


_profiles = []
segments._profiles = _profiles  # the segments note why a call ran op by op in these
_MANY_STATIC_TENSORS = 8  # signatures per op site, in one profile, worth a fallback line


class profile:
    """Context manager collecting a `Profile` of the batches run inside it."""

    def __enter__(self):
        self.profile = Profile()
        _profiles.append(self.profile)
        return self.profile

    def __exit__(self, *exc):
        _profiles.remove(self.profile)


class Trace:
    """The pending graph of one batch and the example currently recording."""

    executes = True  # False while a worker plans (dynnet/plans.py): nothing runs then

    def __init__(self, strategy=None):
        self.pending = []
        self.instance = 0
        self.schedule = get_strategy(strategy or config.schedule)
        self.outputs = {}  # example index -> list of (file, text) printed
        self.memo = {}  # (segment signature, data) -> lazy outputs (SegmentTemplate)
        # while examples may be kept for replay: (len(pending), memo key) of each memo hit
        self.hits = None
        self.nodes = 0
        self.groups = 0
        self.rounds = 0
        self.replayed = 0
        self.recorded = 0
        self.value_reads = None  # examples that read a non-lazy tensor's value (a set)
        self.execute_seconds = 0.0
        self.schedule_seconds = 0.0

    def flush(self):
        """Executes every pending node, group by group."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        start = time.perf_counter()
        self.nodes += len(pending)
        self.rounds += 1
        log = _profiles[-1].group_sizes if _profiles else None
        groups = list(self.schedule(fuse_recurrences(pending)))
        placements = arena.plan(groups)
        scheduled = time.perf_counter()
        self.schedule_seconds += scheduled - start
        results = []
        try:
            for (sig, nodes), placement in zip(groups, placements):
                self.groups += 1
                if log is not None:
                    log.setdefault(sig, []).append(len(nodes))
                results.append(execute_group(sig, nodes, placement))
        finally:
            for result in results:
                result.slots = None  # the arenas served this round only
            arena.release(placements)
        self.execute_seconds += time.perf_counter() - scheduled

    def write(self, index, file, text):
        """Buffers text printed by example `index` (emitted in example order)."""
        self.outputs.setdefault(index, []).append((file, text))

    def emit_outputs(self):
        for index in sorted(self.outputs):
            for file, text in self.outputs[index]:
                (file or sys.stdout).write(text)
        self.outputs.clear()


class _Example:
    __slots__ = ("index", "stack", "value", "need", "result", "grad_enabled", "pending")

    def __init__(self, index, gen, pending=None):
        self.index = index
        self.stack = [gen]
        self.value = None
        self.need = None
        self.result = None
        self.pending = pending
        self.grad_enabled = torch.is_grad_enabled()


def _step(ex):
    """Runs example `ex` until it pauses (returns True) or finishes (False).

    Grad mode belongs to the example: `with torch.no_grad():` around a pause holds
    for that example alone (and ops record the mode in their signature).
    """
    torch._C._set_grad_enabled(ex.grad_enabled)
    try:
        return _run_until_pause(ex)
    finally:
        ex.grad_enabled = torch.is_grad_enabled()


def _run_until_pause(ex):
    stack = ex.stack
    value = ex.value
    error = None
    out = ex.pending  # a request the top generator made before the driver saw it
    ex.pending = None
    while True:
        if out is None:
            gen = stack[-1]
            try:
                out = gen.send(value) if error is None else gen.throw(error)
            except StopIteration as stop:
                stack.pop()
                value, error, out = stop.value, None, None
                if not stack:
                    ex.result = value
                    return False
                continue
            except BaseException as e:
                stack.pop()
                if not stack:
                    raise
                error, out = e, None
                continue
            error = None
        while out.gen is not None:  # a call: the callee goes on the stack
            stack.append(out.gen)
            if out.first is None:
                break
            out = out.first  # the callee ran its first step inline: its own request
        else:
            ex.need = out
            return True
        value, out = None, None


def _resolve(examples):
    """Reads back the values paused examples need (one transfer per buffer)."""
    by_buffer = {}
    for ex in examples:
        need = ex.need
        if need.scalar is not None:
            t = need.lazies[0]
            if t.shape.numel() == 1:
                buf = t.node.group.outputs[t.index]
                entry = by_buffer.setdefault(id(buf), (buf, []))
                entry[1].append((ex, t.node.row))
                continue
        ex.value = need.post([t.value for t in need.lazies])
    for buf, items in by_buffer.values():
        rows = index_tensor([row for _, row in items], buf.device)
        values = buf.detach().index_select(0, rows).reshape(len(items)).tolist()
        for (ex, _), v in zip(items, values):
            ex.value = ex.need.scalar(v)
    for ex in examples:
        ex.need = None


def _annotate(error, index):
    """Adds the example index and the user's file:line to an escaping exception."""
    if getattr(error, "_dynnet_noted", False):
        return

    tb, origin = error.__traceback__, None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not tracing.is_library_file(filename):
            origin = (filename, tb.tb_lineno)
        tb = tb.tb_next
    note = f"dynnet: raised while running example {index} of the batch"
    if origin is not None:
        note += f", at {where(origin)}"
    error.add_note(note)
    error._dynnet_noted = True


def run_batch(make_generator, per_example_args, strategy=None, traces=None):
    """Runs one converted function on every example; returns their raw results.

    Args:
      make_generator: called with one example's argument tuple; returns a generator.
      per_example_args: list of argument tuples, one per example.
      traces: the function's `TraceCache` (dynnet/example_traces.py), or None: examples
        found there are replayed, and those that ran in one go are kept there.
    Returns:
      The list of per-example results (lazy leaves are executed) and the trace.
    """
    trace = Trace(strategy)
    tracing._active.append(trace)
    start = time.perf_counter()
    examples = []
    # a trace allocates many small objects that live until the batch ends: the
    # cyclic collector would scan them again and again for nothing
    gc_was_enabled = gc.isenabled()
    gc.disable()
    grad_enabled = torch.is_grad_enabled()
    try:
        replays = {}  # example index -> its recorded trace, replayed in its turn
        for i, args in enumerate(per_example_args):
            entry = traces.lookup(args, grad_enabled) if traces is not None else None
            if entry is not None:
                replays[i] = entry
            examples.append(_Example(i, None))
        runnable = examples
        first = traces is not None
        if first:
            trace.hits = []
        starting = True  # the first round: examples start in order, as tracing them would
        while True:  # at least once: replayed examples have pending nodes too
            paused = []
            for ex in runnable:
                trace.instance = ex.index
                if starting:
                    entry = replays.pop(ex.index, None)
                    if entry is not None:
                        ex.result = traces.replay(trace, entry, ex.index)
                        trace.replayed += 1
                        continue
                    lifted = lift_inputs(per_example_args[ex.index])
                begin, rounds, made = len(trace.pending), trace.rounds, tracing._serials[0]
                hits = len(trace.hits) if first else 0
                try:
                    if starting:  # a function that never pauses runs here, to its end
                        torch._C._set_grad_enabled(grad_enabled)
                        ex.stack[0] = make_generator(lifted)
                    if _step(ex):
                        paused.append(ex)
                        if first:
                            _trace_miss("it paused for a value (a test on a tensor)")
                    elif first and trace.rounds == rounds and tracing._serials[0] == made:
                        # it ran in one go, on signatures and segments seen before (the
                        # first call of a segment records its ops one by one)
                        reason = traces.record(trace, ex, per_example_args[ex.index],
                                               begin, grad_enabled, trace.hits[hits:])
                        if reason is None:
                            trace.recorded += 1
                        _trace_miss(reason)
                    elif first and trace.rounds != rounds:
                        _trace_miss("it needed a value where the code cannot pause (the "
                                    "graph ran mid-way)")
                    elif first:
                        _trace_miss("it made new batching signatures (the first calls of "
                                    "its code, or ops on tensors that are new at every "
                                    "call, such as the example's own tensors)")
                except BaseException as e:
                    _annotate(e, ex.index)
                    raise
            first = starting = False
            trace.hits = None
            torch._C._set_grad_enabled(grad_enabled)
            trace.flush()
            if not paused:
                break
            _resolve(paused)
            runnable = paused
    finally:
        torch._C._set_grad_enabled(grad_enabled)
        if gc_was_enabled:
            gc.enable()
        tracing._active.pop()
        trace.emit_outputs()
        for p in _profiles:
            p.batches += 1
            p.nodes += trace.nodes
            p.groups += trace.groups
            p.rounds += trace.rounds
            p.replayed += trace.replayed
            p.recorded += trace.recorded
            p.execute_seconds += trace.execute_seconds
            p.schedule_seconds += trace.schedule_seconds
            p.total_seconds += time.perf_counter() - start
    return [ex.result for ex in examples], trace


def _trace_miss(reason):
    """Counts an example of a reuse_traces function that was not kept, with why."""
    if reason is not None and _profiles:
        misses = _profiles[-1].trace_misses
        misses[reason] = misses.get(reason, 0) + 1


def run_nested(gen, first=None):
    """Runs a generator to completion inside the active trace, on Python's stack.

    Used when a converted function is called from code that cannot yield (library
    code, lambdas): a pause executes the pending graph at once. `first` is what
    `gen` already yielded, if it was started.
    """
    return _run_here(gen, first)[0]


def _run_here(gen, first):
    """`(result, whether it paused)` of running `gen` as `run_nested` does."""
    trace = tracing._active[-1]
    ex = _Example(trace.instance, gen, first)
    paused = False
    inline = inline_depth[0]
    inline_depth[0] = 0  # this driver loop keeps its own stack: first steps inline again
    try:
        while _step(ex):
            paused = True
            trace.flush()
            _resolve([ex])
    finally:
        inline_depth[0] = inline
    return ex.result, paused


# Calls nested on Python's stack right now (converter/__init__.py, `start`): first
# steps of resumable calls in the innermost driver loop, and direct calls in all.
inline_depth = [0]
direct_depth = [0]
waited = [False]  # a direct call had to wait for a value (see `wait`)


def wait(suspend):
    """The value `suspend` stands for, in a direct call (converter/direct.py): a call
    that did not finish inline runs to its end in a driver loop of its own; a value
    that must be computed first executes the pending graph now. Either pause sets
    `waited[0]`."""
    if suspend.gen is None:
        waited[0] = True
        return complete(suspend)
    result, paused = _run_here(suspend.gen, suspend.first)
    if paused:
        waited[0] = True
    return result


def complete(suspend):
    """The value a `Suspend` stands for, computed at once (no batching across examples)."""
    if suspend.gen is not None:
        return run_nested(suspend.gen, suspend.first)
    tracing._active[-1].flush()
    ex = _Example(tracing._active[-1].instance, None)
    ex.need = suspend
    _resolve([ex])
    return ex.value


def tensor_leaves(obj, out):
    """Appends the tensors of an argument structure to `out`, in the order in which
    `lift_inputs` lifts them."""
    cls = obj.__class__
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif cls is tuple or cls is list:
        for x in obj:
            tensor_leaves(x, out)
    elif cls is dict:
        for x in obj.values():
            tensor_leaves(x, out)


def lift_inputs(obj):
    """Per-example tensors in an argument structure become lazy inputs.

    Lists, tuples and dicts are copied only when they hold tensors, so a function
    that changes a container it was given changes the caller's container.
    """
    cls = obj.__class__
    if isinstance(obj, torch.Tensor):
        return tracing.lazy_input(obj)
    if cls is tuple or cls is list:
        items = [lift_inputs(x) for x in obj]
        return cls(items) if any(a is not b for a, b in zip(items, obj)) else obj
    if cls is dict:
        items = {k: lift_inputs(v) for k, v in obj.items()}
        return items if any(items[k] is not obj[k] for k in obj) else obj
    return obj
