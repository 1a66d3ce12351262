"""Shape ops and indexing.

View-like ops (reshape, view, flatten, squeeze, unsqueeze, ...) keep the data order,
so their batched form is a reshape to [B, *out_shape]. Permutations shift their
dims; static indexing prepends a full slice for the batch dim.
"""

import operator

import torch

from dynnet.backends.rules import def_rule, vmap_rule
from dynnet.tracing import SLOT


def view_rule(call):
    if call.sig.template[0][0] is not SLOT:
        return vmap_rule(call)
    return call.slots[0].reshape(call.size, *call.sig.out_avals[0].shape)


def _both(name):
    return [getattr(torch, name, None), getattr(torch.Tensor, name, None)]


_VIEW_LIKE = ["reshape", "view", "flatten", "ravel", "squeeze", "unsqueeze", "view_as",
              "reshape_as", "unflatten", "atleast_1d", "atleast_2d"]
for _n in _VIEW_LIKE:
    def_rule(_both(_n), view_rule)


def permute_rule(call):
    args, kwargs = call.args()
    rank = len(call.sig.in_avals[0].shape)
    dims = kwargs.get("dims", args[1:])
    if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
        dims = dims[0]
    return args[0].permute(0, *[(d % rank) + 1 for d in dims])


def t_rule(call):
    x = call.slots[0]
    return x if x.dim() < 3 else x.transpose(1, 2)


def repeat_rule(call):
    args, _ = call.args()
    sizes = args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
        sizes = sizes[0]
    if len(sizes) != len(call.sig.in_avals[0].shape):
        return vmap_rule(call)
    return args[0].repeat(1, *sizes)


def_rule(_both("permute"), permute_rule)
def_rule(_both("t"), t_rule)
def_rule([torch.Tensor.repeat], repeat_rule)


def _is_advanced(i):
    return isinstance(i, (torch.Tensor, list)) or (i is not None and i is not Ellipsis and
                                                   not isinstance(i, (int, slice)))


def getitem_rule(call):
    """x[index] with a static index (ints, slices, None, ..., shared index tensors)."""
    template_args, _ = call.sig.template
    if template_args[0] is not SLOT or len(call.slots) > 1:
        return vmap_rule(call)
    index = template_args[1]
    if not isinstance(index, tuple):
        index = (index,)
    advanced = [k for k, i in enumerate(index) if _is_advanced(i)]
    if advanced and advanced[-1] - advanced[0] + 1 != len(advanced):
        return vmap_rule(call)  # separated advanced indices move dims to the front
    if any(isinstance(i, bool) for i in index):
        return vmap_rule(call)
    return call.slots[0][(slice(None),) + index]


def_rule([operator.getitem, torch.Tensor.__getitem__], getitem_rule)
