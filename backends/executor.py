"""Running one scheduled group: gather, apply the batching rule, check, store.

When a batched call fails, the group's examples are re-run one at a time to find
the failing example, and the error names the op, the user's file:line and the
example index.
"""

import torch

from dynnet.backends import arena
from dynnet.backends.gather import data_tensor, gather, gather_columns
from dynnet.errors import BatchingError, where
from dynnet.tracing import flatten_outputs, rebuild


class GroupResult:
    """The batched outputs of one executed group (row i belongs to its i-th node).

    `slots` is the group's arena Placement slots while its round runs (then None):
    per output, `(arena, base)` when the output was also copied into an arena.
    """

    __slots__ = ("outputs", "slots")

    def __init__(self, outputs, slots=None):
        self.outputs = outputs
        self.slots = slots


def execute_group(sig, nodes, placement=None):
    """Executes `nodes` (all of signature `sig`) as one batched call; stores results
    (also into the round's arenas, where `placement` says so)."""
    kind = sig.kind
    if kind == "op" or kind == "segment" or kind == "loop" or kind == "numbers":
        outputs = _run_op(sig, nodes, placement)
    elif kind == "const":
        aval = sig.out_avals[0]
        outputs = [data_tensor([n.payload for n in nodes], aval)]
    else:  # "stack": per-example eager tensors
        outputs = [torch.stack([n.payload for n in nodes])]
    if placement is not None:
        arena.store(placement, outputs)
        result = GroupResult(outputs, placement.slots)
    else:
        result = GroupResult(outputs)
    for row, node in enumerate(nodes):
        node.group = result
        node.row = row
        node.depth = 0
        node.inputs = ()
        node.payload = None
    return result


def _run_op(sig, nodes, placement):
    B = len(nodes)
    if len(sig.in_avals) == 1:
        slots = [gather([n.inputs[0] for n in nodes])]
    else:  # one column of input lazies per slot
        slots = gather_columns(list(zip(*[n.inputs for n in nodes])))
    if sig.kind == "numbers":  # each node's own signature holds its number
        payloads = [sig.fn.number_of(n.sig) for n in nodes]
    elif sig.kind == "segment" or sig.kind == "loop":
        payloads = [n.payload for n in nodes]
    else:
        payloads = None
    try:
        leaves = call_batched(sig, slots, B, payloads, placement)
    except Exception as e:
        raise _locate_failure(sig, nodes, e) from None
    bad = wrong_output(sig, leaves, B)
    if bad is not None:
        if bad.__class__ is str:
            raise BatchingError(bad)
        raise _shape_error(sig, nodes, bad, sig.out_avals[leaves.index(bad)])
    return leaves


def call_batched(sig, slots, B, payloads, placement=None):
    """The flat output tensors of signature `sig`'s batched call on the stacked input
    `slots` of `B` rows, in the grad mode `sig` was recorded in; `payloads` are the
    rows' data (segments, loops) or numbers (a group of per-example numbers). Outside
    autograd, a segment computes its outputs straight into their rows of the round's
    arenas, where `placement` puts them (see `SegmentTemplate.run_batched`)."""
    if sig.grad_enabled or not torch.is_grad_enabled():
        return _call(sig, slots, B, payloads, placement)
    with torch.no_grad():  # recorded under torch.no_grad()
        return _call(sig, slots, B, payloads, placement)


def _call(sig, slots, B, payloads, placement):
    from dynnet.backends.rules import BatchedCall

    outs = None
    if placement is not None and sig.kind == "segment" and not torch.is_grad_enabled():
        outs = {k: slot[0][slot[1]:slot[1] + B]
                for k, slot in enumerate(placement.slots) if slot is not None}
    if outs:
        out = sig.fn.run_batched(slots, B, payloads, outs)
    elif payloads is not None:
        out = sig.fn.run_batched(slots, B, payloads)
    else:
        out = sig.rule(BatchedCall(sig, slots, B))
    if out.__class__ is torch.Tensor:
        return [out]
    leaves = []
    flatten_outputs(out, leaves)
    return leaves


def wrong_output(sig, leaves, B):
    """None when `leaves` are what `sig`'s call on B rows must return, else a message
    (a wrong count) or the first leaf of a wrong shape."""
    avals = sig.out_avals
    if len(leaves) != len(avals):
        return (f"{sig.name} at {where(sig.origin)}: batched call returned "
                f"{len(leaves)} tensors, expected {len(avals)}"
                + (": a Python number it returns became a tensor when batched (a number "
                   "that a loop or a branch on tensors changes holds one value per row); "
                   "return it as a tensor, torch.tensor(n)" if len(leaves) > len(avals)
                   else ""))
    for leaf, aval in zip(leaves, avals):
        if leaf.shape[0] != B or leaf.shape[1:] != aval.shape:
            return leaf
        if leaf.dtype != aval.dtype or leaf.device.type != aval.device.type:
            return (f"{sig.name} at {where(sig.origin)} produced {leaf.dtype} on {leaf.device} "
                    f"when batched, but {aval.dtype} on {aval.device} when it was first "
                    "called: a module changed its dtype or device after its first batch "
                    "(model.double(), model.to(...)), or torch.autocast was entered inside "
                    "the function. dynnet notices a change of the modules among a "
                    "function's arguments (a method's self) and an autocast around the "
                    "batch; pass the module so, or convert it before its first batch")
    return None


def _shape_error(sig, nodes, leaf, aval):
    return BatchingError(
        f"{sig.name} at {where(nodes[0].origin)} produced per-example shape "
        f"{list(leaf.shape[1:])} when batched, but {list(aval.shape)} per example; "
        "its output shape depends on the values, which cannot be batched")


def _locate_failure(sig, nodes, error):
    """Runs the group's nodes one by one to name the example that fails."""
    for node in nodes:
        values = [t.node.group.outputs[t.index][t.node.row] for t in node.inputs]
        own = node.sig  # differs from `sig` in a group of per-example numbers
        args, kwargs = (values, {"data": node.payload}) if sig.kind in ("segment", "loop") \
            else rebuild(own.template, iter(values))
        try:
            own.fn(*args, **kwargs)
        except Exception as e:
            if "dynamic shape" in str(e):  # vmap refuses a value-dependent shape
                return BatchingError(
                    f"{sig.name} at {where(node.origin)} (example {node.instance}): its "
                    "output shape depends on the values (indexing with a boolean mask, "
                    "nonzero, unique, ...), which cannot be batched; keep the shape "
                    "static, e.g. torch.where(mask, x, 0) in place of x[mask]")
            return _error_like(e, f"{sig.name} {_site(sig, node)} "
                                  f"(example {node.instance}): {e}")
    if "must only return Tensors" in str(error):  # vmap of a module returning a number
        return BatchingError(
            f"{sig.name} at {where(nodes[0].origin)} returns something other than tensors "
            "(a Python number, say); a module called on lazy values must return tensors, "
            "or tuples, lists and dicts of them: return torch.tensor(n) instead of n")
    return BatchingError(
        f"{sig.name} at {where(nodes[0].origin)} cannot be batched: it runs on each example "
        f"alone, but not on the stack of examples {sorted({n.instance for n in nodes})[:10]} "
        f"({type(error).__name__}: {error})")


def _site(sig, node):
    """Where the node was recorded, as far as the signature knows: a segment's code is
    one place; an op's signature is shared by every call with the same arguments'
    shapes, and keeps the place of the first."""
    if sig.kind == "op":
        return f"(first called with these argument shapes at {where(node.origin)})"
    return f"at {where(node.origin)}"


def _error_like(e, msg):
    try:
        return type(e)(msg)
    except Exception:
        return BatchingError(msg)
