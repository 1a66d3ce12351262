"""Batches seen before: run from a kept plan, without per-node Python.

With `reuse_traces=True`, an example seen before replays its recorded nodes
(dynnet/example_traces.py), but a replayed batch still makes a Python object per node,
schedules them and builds every gather index: about 2.5 µs a node for the SST
tree-LSTM, a third of its batch time. A batch whose examples all replay, coming back
with the same examples in the same order (an evaluation set in fixed batches every
epoch, training without reshuffling), records the same graph every time, so its
schedule and gather indices are the same too. The second time such a batch comes, it
is planned as a worker plans a batch (dynnet/plans.py: replayed, scheduled, every
gather index ready), and the plan is kept; from then on the batch runs from its plan,
group after group, with no Python per node. The groups, their rows and their gathers
are those of running the batch as usual, so the results are the same bits.

A batch seen once is only noted (a key of ids), so reshuffled training, whose batches
do not come back, keeps no plans. Plans are kept with the traces of their models (a
change that empties those empties the plans too) and count against the same bound:
up to `max_examples` examples in kept plans per set of modules, about 1 KB an SST
tree on top of its 7 KB trace. A batch that cannot be planned (per-example data that
is not plain Python), or whose plan fails when it runs (then the batch runs as usual,
which names the failing example), is run as usual from then on.
"""

import time

import torch

from dynnet import tracing
from dynnet.plans import PlanMiss, execute_plan, plan_batch
from dynnet.runtime import _profiles

_MAX_SEEN = 10_000  # keys of batches seen once; forgotten all together beyond this


def has_plan(traces, per_example_args):
    """Whether the batch has a kept plan for the current grad mode (`traces.current` is
    the partition of its modules)."""
    found = _key(traces, per_example_args)
    if found is None:
        return False
    kept = traces.current.plans.get(found[0])
    return kept is not None and kept[1] is not None


def run_planned(traces, make_generator, per_example_args, strategy):
    """The results of running the batch from its kept plan, or None: run it as usual.

    `traces` is the function's `TraceCache`, whose partition for the batch's modules is
    current (`TraceCache.begin`)."""
    found = _key(traces, per_example_args)
    if found is None:
        return None
    key, entries = found
    part = traces.current
    kept = part.plans.get(key)
    if kept is None:
        if not _room(traces, entries) or not _seen_before(part, key):
            return None
        kept = _keep(traces, key, entries,
                     _plan(traces, make_generator, per_example_args, strategy))
    plan = kept[1]
    if plan is None:
        return None
    try:
        return execute_plan(plan, tracing.signatures_by_serial, per_example_args, kept=True)
    except PlanMiss:  # a batched call failed: running the batch as usual names the example
        part.plans[key] = (entries, None)
        return None


def note_worker_plan(traces, per_example_args, plan):
    """After a worker's plan of the batch ran here: when the worker replayed every
    example, the plan is the one this process would make, and is kept as the batch's
    plan the second time the batch comes."""
    if plan.replayed != len(per_example_args):
        return
    found = _key(traces, per_example_args)
    if found is not None and found[0] not in traces.current.plans \
            and _room(traces, found[1]) and _seen_before(traces.current, found[0]):
        _keep(traces, found[0], found[1], plan)


def _key(traces, per_example_args):
    """`(key, entries)` of a batch whose examples all have kept traces, else None."""
    grad_enabled = torch.is_grad_enabled()
    entries = []
    for args in per_example_args:
        entry = traces.lookup(args, grad_enabled)
        if entry is None:
            return None
        entries.append(entry)
    if not entries:
        return None
    return (grad_enabled, *map(id, entries)), entries  # a kept plan holds its entries


def _seen_before(part, key):
    """Whether the batch `key` was seen once before; notes it seen when not."""
    if key in part.seen:
        part.seen.discard(key)
        return True
    if len(part.seen) >= _MAX_SEEN:
        part.seen.clear()
    part.seen.add(key)
    return False


def _room(traces, entries):
    """Whether a plan of these examples stays within the bound on kept examples."""
    return traces.current.planned + len(entries) <= traces.max_examples


def _keep(traces, key, entries, plan):
    """Keeps `plan` (None: the batch cannot be planned) for the batch `key`; returns
    what is kept."""
    part = traces.current
    kept = part.plans[key] = (entries, plan)
    part.planned += len(entries)
    return kept


def _plan(traces, make_generator, per_example_args, strategy):
    """The batch's plan, or None; its making counts as tracing in `dynnet.profile()`."""
    start = time.perf_counter()
    try:
        return plan_batch(make_generator, per_example_args, tracing.serials_used(),
                          strategy, traces, in_worker=False)
    except PlanMiss:
        return None
    finally:
        for p in _profiles:
            p.total_seconds += time.perf_counter() - start
