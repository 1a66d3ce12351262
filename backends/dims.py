"""Ops with dimension arguments: shift per-example dims past the batch dim.

A per-example dim d of a tensor with per-example rank r becomes
`(d + r if d < 0 else d) + 1`. Reductions over all dims (`x.sum()`) reduce the
flattened per-example dims. Per-example scalars (rank 0) use the vmap fallback.
"""

import torch
import torch.nn.functional as F

from dynnet.backends.elementwise import elementwise_rule
from dynnet.backends.rules import def_rule, vmap_rule
from dynnet.tracing import SLOT

_ABSENT = object()


def shift(dim, rank):
    """Per-example `dim` (int, sequence or None) as a batched dim."""
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return type(dim)(shift(d, rank) for d in dim)
    return (dim + rank if dim < 0 else dim) + 1


def _get(args, kwargs, pos, name):
    if name in kwargs:
        return kwargs[name]
    if len(args) > pos:
        return args[pos]
    return _ABSENT


def _set(args, kwargs, pos, name, value):
    if name in kwargs or len(args) <= pos:
        kwargs[name] = value
        return args
    return args[:pos] + (value,) + args[pos + 1:]


def dim_rule(pos, name="dim", default=_ABSENT, extra_rank=0, names=(), alone=False):
    """Rule for an op whose arg `pos`/`name` (and `names`) are dims of arg 0.

    `default` is the per-example dim used when the argument is absent (_ABSENT:
    absent means "all dims", handled by flattening). `extra_rank` is 1 for ops whose
    dims index the output (unsqueeze, stack). `alone` ops need arg 0 to be the
    only batched argument.
    """

    def rule(call):
        if call.sig.template[0][0] is not SLOT or (alone and len(call.slots) > 1):
            return vmap_rule(call)
        rank = len(call.sig.in_avals[0].shape) + extra_rank
        if rank == 0:
            return vmap_rule(call)
        args, kwargs = call.args()
        kwargs = dict(kwargs)
        dim = _get(args, kwargs, pos, name)
        if isinstance(dim, torch.Tensor):  # torch.max(x, y) and friends
            return elementwise_rule(call)
        if dim is _ABSENT or dim is None:
            if default is _ABSENT:
                return _all_dims(call, args, kwargs, pos, name)
            dim = default
        args = _set(tuple(args), kwargs, pos, name, shift(dim, rank))
        for p, n in names:
            d = _get(args, kwargs, p, n)
            if d is not _ABSENT and d is not None:
                args = _set(args, kwargs, p, n, shift(d, rank))
        return call.fn(*args, **kwargs)

    return rule


_FLAT_EQUIVALENT = {torch.max: torch.amax, torch.Tensor.max: torch.amax,
                    torch.min: torch.amin, torch.Tensor.min: torch.amin,
                    torch.median: None, torch.Tensor.median: None}


def _all_dims(call, args, kwargs, pos, name):
    """A reduction over all per-example dims: flatten them and reduce dim 1."""
    fn = _FLAT_EQUIVALENT.get(call.fn, call.fn)
    if fn is None or call.sig.template[0][0] is not SLOT:
        return vmap_rule(call)
    x = args[0].reshape(call.size, -1)
    args = _set((x,) + tuple(args[1:]), kwargs, pos, name, 1)
    return fn(*args, **kwargs)


def _both(name):
    return [getattr(torch, name, None), getattr(torch.Tensor, name, None)]


# reductions: absent dim = all dims
for _n in ["sum", "mean", "prod", "amax", "amin", "argmax", "argmin", "all", "any", "nansum",
           "nanmean", "count_nonzero", "max", "min", "logsumexp"]:
    def_rule(_both(_n), dim_rule(1))
for _n in ["std", "var"]:
    def_rule(_both(_n), dim_rule(1))
def_rule(_both("norm"), dim_rule(2))
def_rule([torch.linalg.vector_norm], dim_rule(2))
# ops with a required or defaulted dim
for _n in ["softmax", "log_softmax", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp",
           "sort", "argsort", "gather", "unbind", "diff"]:
    default = -1 if _n in ("sort", "argsort", "diff") else 0 if _n == "unbind" else _ABSENT
    def_rule(_both(_n), dim_rule(1, default=default))
for _n in ["select", "narrow", "index_select"]:
    def_rule(_both(_n), dim_rule(1, alone=True))
def_rule([F.softmax, F.log_softmax], dim_rule(1))
def_rule([F.normalize], dim_rule(2, default=1))
def_rule(_both("topk") + _both("kthvalue"), dim_rule(2, default=-1))
def_rule(_both("split") + _both("chunk") + _both("tensor_split"), dim_rule(2, default=0))
def_rule(_both("flip"), dim_rule(1, name="dims"))
def_rule(_both("transpose") + _both("swapaxes") + _both("swapdims"),
         dim_rule(1, name="dim0", names=[(2, "dim1")]))
def_rule(_both("movedim") + _both("moveaxis"),
         dim_rule(1, name="source", names=[(2, "destination")]))
def_rule(_both("roll"), dim_rule(2, name="dims"))
def_rule([F.glu], dim_rule(1, default=-1))


def _concat_rule(extra_rank):
    """torch.cat / torch.stack: shared members are broadcast over the batch."""

    def rule(call):
        args, kwargs = call.args()
        tensors = args[0] if args else kwargs.pop("tensors")
        B = call.size
        members, lazy_avals = [], iter(call.sig.in_avals)
        template = (call.sig.template[0][0] if args else call.sig.template[1]["tensors"])
        for t, tmpl in zip(tensors, template):
            if tmpl is SLOT:
                next(lazy_avals)
                members.append(t)
            else:
                members.append(t.expand(B, *t.shape))
        rank = len(call.sig.in_avals[0].shape) + extra_rank
        kwargs = dict(kwargs)
        dim = _get(args, kwargs, 1, "dim")
        dim = 0 if dim is _ABSENT else dim
        if rank == 0:
            return vmap_rule(call)
        kwargs["dim"] = shift(dim, rank)
        return call.fn(members, **kwargs)

    return rule


def_rule([torch.cat, torch.concat, torch.concatenate], _concat_rule(0))
def_rule([torch.stack], _concat_rule(1))
