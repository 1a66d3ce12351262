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

import torch

from dynnet import tracing
from dynnet.plans import PlanMiss, execute_plan, plan_batch

_MAX_SEEN = 10_000  # keys of batches seen once; forgotten all together beyond this


def run_planned(traces, make_generator, per_example_args, strategy):
    """The results of running the batch from its kept plan, or None: run it as usual.

    `traces` is the function's `TraceCache`, whose partition for the batch's modules is
    current (`TraceCache.begin`)."""
    part = traces.current
    grad_enabled = torch.is_grad_enabled()
    entries = []
    for args in per_example_args:
        entry = traces.lookup(args, grad_enabled)
        if entry is None:
            return None
        entries.append(entry)
    if not entries:
        return None
    key = (grad_enabled, *map(id, entries))  # the plan holds the entries: ids stay theirs
    found = part.plans.get(key)
    if found is None:
        if key not in part.seen:
            if len(part.seen) >= _MAX_SEEN:
                part.seen.clear()
            part.seen.add(key)
            return None
        part.seen.discard(key)
        if part.planned + len(entries) > traces.max_examples:
            return None
        found = part.plans[key] = (entries, _plan(traces, make_generator, per_example_args,
                                                  strategy))
        part.planned += len(entries)
    plan = found[1]
    if plan is None:
        return None
    try:
        return execute_plan(plan, tracing.signatures_by_serial, per_example_args, kept=True)
    except PlanMiss:  # a batched call failed: running the batch as usual names the example
        part.plans[key] = (found[0], None)
        return None


def _plan(traces, make_generator, per_example_args, strategy):
    try:
        return plan_batch(make_generator, per_example_args, tracing.serials_used(),
                          strategy, traces, in_worker=False)
    except PlanMiss:
        return None
