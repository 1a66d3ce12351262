"""Turning per-example results into what users get back.

`materialize(obj)` replaces every (executed) lazy leaf by its torch tensor, in tuples,
lists, dicts (and their subclasses, such as OrderedDict), namedtuples and dataclasses.
`stack_outputs(results)` returns the output structure of one example with every
tensor leaf stacked on a new leading dim, or the list of materialized per-example
results when structures or leaf shapes differ. Non-tensor leaves (including lists
and tuples that hold no tensor) become the list of the examples' values.
"""

import dataclasses

import torch

from dynnet.backends.gather import gather
from dynnet.lazy import LazyTensor


def _has_tensor(obj):
    cls = obj.__class__
    if cls is LazyTensor or isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, (tuple, list)):
        return any(_has_tensor(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_tensor(x) for x in obj.values())
    if _is_dataclass(obj):
        return any(_has_tensor(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return False


def _is_dataclass(obj):
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


_DICT, _DATACLASS = object(), object()  # kinds of structure with their class

def _flatten(obj, leaves):
    """A hashable description of `obj`'s structure; appends its leaves.

    A list or tuple without tensors (token ids, say) is one leaf: each example's
    list is kept whole instead of being transposed position by position.
    """
    cls = obj.__class__
    if (cls is tuple or cls is list) and not _has_tensor(obj):
        leaves.append(obj)
        return None
    if cls is tuple or cls is list:
        return (cls, tuple(_flatten(x, leaves) for x in obj))
    if cls is dict:
        return (dict, tuple(obj), tuple(_flatten(v, leaves) for v in obj.values()))
    if isinstance(obj, tuple) and hasattr(cls, "_fields"):  # namedtuple
        return (cls, tuple(_flatten(x, leaves) for x in obj))
    if isinstance(obj, dict) and _has_tensor(obj):  # OrderedDict, ...
        return (_DICT, cls, tuple(obj), tuple(_flatten(v, leaves) for v in obj.values()))
    if _is_dataclass(obj) and _has_tensor(obj):  # its fields that __init__ takes
        names = tuple(f.name for f in dataclasses.fields(obj) if f.init)
        return (_DATACLASS, cls, names,
                tuple(_flatten(getattr(obj, n), leaves) for n in names))
    leaves.append(obj)
    return None


def _unflatten(structure, leaves):
    if structure is None:
        return next(leaves)
    cls = structure[0]
    if cls is dict:
        return {k: _unflatten(s, leaves) for k, s in zip(structure[1], structure[2])}
    if cls is _DICT:
        out = structure[1]()
        out.update((k, _unflatten(s, leaves)) for k, s in zip(structure[2], structure[3]))
        return out
    if cls is _DATACLASS:
        return structure[1](**{n: _unflatten(s, leaves)
                               for n, s in zip(structure[2], structure[3])})
    items = [_unflatten(s, leaves) for s in structure[1]]
    if cls is tuple or cls is list:
        return cls(items)
    return cls(*items)


def materialize(obj):
    """`obj` with every lazy leaf replaced by its computed tensor."""
    leaves = []
    structure = _flatten(obj, leaves)
    values = [x.value if x.__class__ is LazyTensor else x for x in leaves]
    return _unflatten(structure, iter(values))


def _is_tensor(x):
    return x.__class__ is LazyTensor or isinstance(x, torch.Tensor)


def stack_outputs(results):
    """Stacks per-example results leaf by leaf; see the module docstring."""
    if not results:
        return []
    per_example = []
    structures = set()
    for r in results:
        leaves = []
        structures.add(_flatten(r, leaves))
        per_example.append(leaves)
    if len(structures) != 1:
        return [materialize(r) for r in results]
    structure = structures.pop()
    columns = list(zip(*per_example))
    for column in columns:
        if all(_is_tensor(x) for x in column):
            if len({(tuple(x.shape), x.dtype) for x in column}) != 1:
                return [materialize(r) for r in results]
        elif any(_is_tensor(x) for x in column):
            return [materialize(r) for r in results]
    stacked = []
    for column in columns:
        if not _is_tensor(column[0]):
            stacked.append(list(column))
        elif all(x.__class__ is LazyTensor for x in column):
            stacked.append(gather(column))
        else:
            stacked.append(torch.stack([x.value if x.__class__ is LazyTensor else x
                                        for x in column]))
    return _unflatten(structure, iter(stacked))
