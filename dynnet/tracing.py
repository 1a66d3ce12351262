"""Recording ops on lazy values into the active trace.

`record(fn, args, kwargs)` is the single entry for every op on lazy tensors (torch
functions, tensor methods, Python operators, module calls). It flattens the
arguments into tensor *slots* and a static *template*, looks up the op's
`Signature` by a key built from the op, the static arguments and the slots'
shapes/dtypes/devices, and appends one `Node` to the trace. On the first sight of
a key, the output shapes are inferred by running the op once on placeholder
values; afterwards recording costs a dict lookup.

Nodes with the same `Signature` object are batched together by the scheduler.
"""

import math
import os
import sys
import sysconfig
import weakref

import torch

from dynnet.errors import BatchingError, ConcretizationError, where

SLOT = object()  # marks a tensor slot inside a template
_MAX_SIGNATURES = 200_000


# Every signature gets a serial number in order of creation. A forked process shares the
# signatures that existed when it was forked under the same serials (dynnet/plans.py).
_serials = [0]  # the serial of the next signature
signatures_by_serial = weakref.WeakValueDictionary()


class Signature:
    """What nodes of one batchable kind share: op, static template, in/out avals.

    kind is one of "op" (call `fn` on the rebuilt args), "const" (per-example Python
    scalars made by `torch.tensor`), "stack" (per-example eager tensors: inputs and
    other constants) or "shared" (one value broadcast to every node of the group);
    segments, loops and joined groups of per-example numbers (dynnet/segments.py,
    backends/numbers.py) make signatures of kinds "segment", "loop" and "numbers".
    """

    __slots__ = ("kind", "fn", "name", "template", "in_avals", "out_template", "out_avals",
                 "rule", "origin", "grad_enabled", "tuple_out", "serial", "recurrence",
                 "__weakref__")

    def __init__(self, kind, fn, name, template, in_avals, origin):
        self.serial = _serials[0]
        _serials[0] += 1
        signatures_by_serial[self.serial] = self
        self.kind = kind
        self.fn = fn
        self.name = name
        self.template = template
        self.in_avals = in_avals
        self.out_template = SLOT
        self.out_avals = ()
        self.rule = None
        self.origin = origin
        self.grad_enabled = True  # "op" and "segment" signatures: the mode they record
        self.tuple_out = False  # out_template is a flat tuple of tensors: `(h, c)`
        # a segment's fused recurrence (dynnet/recurrences.py): False until looked for,
        # then the RecurrentTemplate or None
        self.recurrence = False

    def describe(self):
        """The op and its per-example input avals, e.g. 'Linear module(float32[16])'."""
        return f"{self.name}({', '.join(map(repr, self.in_avals))})"

    def __repr__(self):
        return f"Signature({self.describe()})"


class Aval:
    """Abstract value of one per-example tensor: shape, dtype, device.

    Avals are interned (`aval`): equal avals are the same object, so signature keys
    hash and compare them by identity.
    """

    __slots__ = ("shape", "dtype", "device", "__weakref__")

    def __init__(self, shape, dtype, device):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.device = device

    def placeholder(self):
        """A concrete tensor of this aval for shape inference (ones; zeros for ints)."""
        if self.dtype.is_floating_point or self.dtype.is_complex:
            return torch.ones(self.shape, dtype=self.dtype, device=self.device)
        return torch.zeros(self.shape, dtype=self.dtype, device=self.device)

    def __repr__(self):
        return f"{self.dtype}{list(self.shape)}"


_avals = {}


def aval(shape, dtype, device):
    """The interned `Aval` of (shape, dtype, device)."""
    key = (tuple(shape), dtype, device)
    a = _avals.get(key)
    if a is None:
        a = _avals[key] = Aval(shape, dtype, device)
    return a


# -------------------- the active trace --------------------

def serials_used():
    """How many signatures were ever made: every signature's serial is below it."""
    return _serials[0]


_active = []
_capture = None  # while dynnet.segments captures a segment: the list of nodes recorded
_capture_data = {}  # id(node) -> index of the segment data input that is its payload


def current():
    """The trace being recorded into, or None outside a batch."""
    return _active[-1] if _active else None


def note_value_read():
    """Converted code read the value of a tensor that is not lazy (a parameter tested,
    a buffer's `.item()`): the example being traced cannot be replayed, since the
    value may change in place (dynnet/example_traces.py)."""
    trace = _active[-1] if _active else None
    if trace is not None:
        if trace.value_reads is None:
            trace.value_reads = set()
        trace.value_reads.add(trace.instance)


_INTERNAL = set()


def register_internal_file(filename):
    """Frames from `filename` are skipped when finding the user's line."""
    _INTERNAL.add(filename)


register_internal_file(__file__)


_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")})
_DYNNET_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + d
                     + os.sep for d in ("dynnet", "backends", "converter"))


_library_files = {}


converted_codes = set()  # code objects dynnet made by converting the user's functions


def note_converted_code(code):
    """Remembers `code`, made by the converter, and the code of the functions it
    defines (local functions, lambdas, segments): a lazy value's error can then tell
    converted code from the user's own, unconverted code."""
    converted_codes.add(code)
    for const in code.co_consts:
        if const.__class__ is code.__class__:
            note_converted_code(const)


def is_library_file(filename):
    """True for files of dynnet's engine, the standard library and installed packages."""
    known = _library_files.get(filename)
    if known is None:
        known = _library_files[filename] = (
            filename in _INTERNAL or filename.startswith(_LIBRARY_DIRS)
            or filename.startswith(_DYNNET_DIRS) or filename.startswith("<frozen"))
    return known


def user_origin(depth=2):
    """`(filename, lineno)` of the innermost frame outside dynnet's own modules."""
    frame = sys._getframe(depth)
    while frame is not None and is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    return (frame.f_code.co_filename, frame.f_lineno)


# -------------------- flattening arguments --------------------


def _key_and_slots(obj, key, slots):
    cls = obj.__class__
    if cls is LazyTensor:
        slots.append(obj)
        key.append(obj.aval)
    elif cls is int or cls is str or obj is None:
        key.append(obj)
    elif cls is tuple or cls is list:
        key.append(cls)
        key.append(len(obj))
        for x in obj:
            _key_and_slots(x, key, slots)
    elif cls is dict:
        key.append(dict)
        key.append(tuple(obj))
        for x in obj.values():
            _key_and_slots(x, key, slots)
    elif isinstance(obj, torch.Tensor):
        base = obj._base
        if base is None:
            key.append(torch.Tensor)
            key.append(id(obj))
        else:  # a view made per call (`self.W.t()`, `self.U[k]`): keyed by what it shows
            key.append(_VIEW)
            key.append((id(base), obj.data_ptr(), obj.shape, obj.stride(), obj.dtype,
                        obj.requires_grad))
    elif isinstance(obj, torch.nn.Module):
        key.append(torch.nn.Module)
        key.append(id(obj))
    else:
        key.append(cls)
        try:
            hash(obj)
            key.append(obj)
        except TypeError:
            key.append(id(obj))
        if cls is float and obj == 0.0:  # -0.0 == 0.0 for Python, not for copysign or 1 / x
            key.append(signed_zero(obj))


_POSITIVE_ZERO, _NEGATIVE_ZERO = object(), object()


def signed_zero(value):
    """For a float equal to 0.0: which of 0.0 and -0.0 it is, as a marker for keys."""
    return _NEGATIVE_ZERO if math.copysign(1.0, value) < 0 else _POSITIVE_ZERO


# In a signature key: the next entry describes a view of a tensor that is not lazy, by
# its base, the memory it shows and its grad mode. Equal views made by different calls
# then share a signature (the signature keeps the first one, which reads the same
# memory and passes gradients to the same base).
_VIEW = object()


def _template(obj):
    cls = obj.__class__
    if cls is LazyTensor:
        return SLOT
    if cls is tuple or cls is list:
        return cls(_template(x) for x in obj)
    if cls is dict:
        return {k: _template(v) for k, v in obj.items()}
    return obj


def flatten_outputs(obj, leaves):
    """Template of an op's output, appending its tensor leaves to `leaves`."""
    if isinstance(obj, torch.Tensor):
        leaves.append(obj)
        return SLOT
    cls = obj.__class__
    if cls is tuple or cls is list:
        return cls(flatten_outputs(x, leaves) for x in obj)
    if isinstance(obj, tuple) and hasattr(cls, "n_fields"):  # torch.return_types
        return _StructSeq(cls, [flatten_outputs(x, leaves) for x in obj])
    if cls is dict:
        return {k: flatten_outputs(v, leaves) for k, v in obj.items()}
    return obj


class _StructSeq:
    __slots__ = ("cls", "items")

    def __init__(self, cls, items):
        self.cls = cls
        self.items = items


def rebuild(template, values):
    """Fills the slots of `template` (of arguments or of outputs) with the items of
    iterator `values`, in order."""
    if template is SLOT:
        return next(values)
    cls = template.__class__
    if cls is tuple or cls is list:
        return cls(rebuild(x, values) for x in template)
    if cls is dict:
        return {k: rebuild(v, values) for k, v in template.items()}
    if cls is _StructSeq:
        return template.cls([rebuild(x, values) for x in template.items])
    return template


# -------------------- recording --------------------

_signatures = {}
_forget_hooks = []  # what else holds signatures by key: cleared with them (segments, ...)
# module -> the dtypes and devices of its parameters and buffers at its last batch
_module_states = weakref.WeakKeyDictionary()


def forget_signatures():
    """Forgets every signature and what holds them by key (segment templates): the
    next calls infer their output shapes again."""
    _signatures.clear()
    for hook in _forget_hooks:
        hook()


def autocast_state():
    """Whether `torch.autocast` is on, and to which dtype, on the CPU and on CUDA."""
    return (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
            torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda"))


_autocast_seen = [None]  # autocast_state() at the last batch


def note_autocast():
    """Forgets the signatures when the batch runs under another `torch.autocast` state
    than the last one: their output dtypes were inferred under that one. (An autocast
    context entered inside the function is not seen.)"""
    state = autocast_state()
    if _autocast_seen[0] is not None and state != _autocast_seen[0]:
        forget_signatures()
    _autocast_seen[0] = state


def note_modules(args, kwargs):
    """Forgets the signatures when a module among `args` or `kwargs` (one example's
    arguments; a method's `self`) has changed the dtype or device of its parameters or
    buffers since its last batch (`model.double()`, `model.to("cuda")`): signatures
    hold the output dtypes and devices of its calls, and an embedding's output, for one,
    changes without any change of its inputs."""
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.nn.Module):
            state = tuple([(t.dtype, t.device) for m in v.modules()
                           for tensors in (m._parameters, m._buffers)
                           for t in tensors.values() if t is not None])
            old = _module_states.get(v)
            if old is not None and old != state:
                forget_signatures()
            _module_states[v] = state


def op_name(fn):
    """A readable name of an op: 'torch.tanh', 'Tensor.sum', 'Linear module', ..."""
    if isinstance(fn, torch.nn.Module):
        return f"{type(fn).__name__} module"
    name = getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or ""
    if module == "torch.nn.functional":
        return f"torch.nn.functional.{name}"
    if module.startswith("torch"):
        return f"torch.{name}"
    if module == "_operator":
        return f"operator.{name}"
    owner = getattr(fn, "__objclass__", None)
    if owner is not None and issubclass(owner, torch._C.TensorBase):
        return f"Tensor.{name}"
    return getattr(fn, "__qualname__", name)


_KWARGS = object()  # separates positional from keyword arguments in a key
_grad_enabled = torch.is_grad_enabled


def record(fn, args, kwargs):
    """Records `fn(*args, **kwargs)` where some argument leaves are lazy tensors.

    Returns the op's output structure with lazy tensors as leaves. Runs the op
    eagerly when no argument is lazy.
    """
    key = [fn, _grad_enabled()]
    slots = []
    for a in args:  # inline fast path for the common leaves
        cls = a.__class__
        if cls is LazyTensor:
            slots.append(a)
            key.append(a.aval)
        elif cls is int:
            key.append(a)
        elif cls is tuple:  # a state like (h, c)
            key.append(tuple)
            key.append(len(a))
            for x in a:
                if x.__class__ is LazyTensor:
                    slots.append(x)
                    key.append(x.aval)
                else:
                    _key_and_slots(x, key, slots)
        else:
            _key_and_slots(a, key, slots)
    if kwargs:
        key.append(_KWARGS)
        _key_and_slots(kwargs, key, slots)
    if not slots:
        factory = _factories.get(fn) if _active else None
        if factory is not None:
            return factory(fn, args, kwargs)
        return fn(*args, **kwargs)
    if not _active:
        raise ConcretizationError(
            f"{op_name(fn)} was applied to a lazy tensor outside of a batched call "
            f"(the lazy value was created at {where(slots[0].node.origin)}); lazy values "
            "are only valid while their batch runs")
    if fn is torch.tensor:
        return _tensor_of_lazies(args, kwargs)
    trace = _active[-1]
    key = tuple(key)
    sig = _signatures.get(key)
    if sig is None:
        sig = _new_signature(fn, args, kwargs, slots, key, user_origin(2), trace)
    node = shared = None
    if slots[0].node.sig.kind == "const" and _capture is None:
        # an op on per-example data alone (a leaf's module on its word): one node
        # per distinct data in the batch (see `_data_key`)
        shared = _data_key(sig, slots)
        if shared is not None:
            node = trace.memo.get(shared)
            if node is not None and trace.hits is not None:  # see dynnet/example_traces.py
                trace.hits.append((len(trace.pending), shared))
    if node is None:
        depth = 0
        for t in slots:
            d = t.node.depth
            if d > depth:
                depth = d
        node = Node(sig, slots, depth + 1, trace.instance)
        trace.pending.append(node)
        if _capture is not None:
            _capture.append(node)
        elif shared is not None:
            trace.memo[shared] = node
    if sig.out_template is SLOT:
        return LazyTensor(node, 0, sig.out_avals[0])
    if sig.tuple_out:
        return tuple([LazyTensor(node, i, a) for i, a in enumerate(sig.out_avals)])
    outs = iter([LazyTensor(node, i, a) for i, a in enumerate(sig.out_avals)])
    return rebuild(sig.out_template, outs)


def _tensor_of_lazies(args, kwargs):
    """`torch.tensor(data)` where `data` (lists of) holds lazy values: as PyTorch does,
    a copy of their values without their gradient, made as `torch.stack(...).detach()`
    in the dtype and on the device asked for."""
    if len(args) != 1 or set(kwargs) - {"dtype", "device"}:
        raise BatchingError(
            f"torch.tensor at {where(user_origin(3))} of lazy values takes the data and "
            "dtype= or device= only; use torch.stack to keep their gradient")
    out = _stacked(args[0]).detach()
    if kwargs:
        out = out.to(**kwargs)
    return out


def _stacked(data):
    if data.__class__ is LazyTensor:
        return data
    if (data.__class__ is list or data.__class__ is tuple) and data:
        return torch.stack([_stacked(x) for x in data])
    raise BatchingError(
        f"torch.tensor at {where(user_origin(4))} mixes lazy values with "
        f"{type(data).__name__} values: make every item a tensor (torch.tensor(1.0) for a "
        "number) and use torch.stack")


# per-example data that may key a shared node (not floats: -0.0 == 0.0 for Python, not
# for torch); segments use it too
SHAREABLE_DATA = (int, bool, str)
_deterministic = None  # backends.rules.deterministic, once imported


def _data_key(sig, slots):
    """The key under which a call of `sig` on `slots` (all constants made from
    per-example Python data) shares its node with equal calls in the batch, or None
    when it must not: random or unknown ops, float or unhashable data."""
    global _deterministic
    parts = [sig]
    for t in slots:
        node = t.node
        if node.sig.kind != "const" or node.payload.__class__ not in SHAREABLE_DATA:
            return None
        parts.append(node.sig)
        parts.append(node.payload)
    if _deterministic is None:
        from dynnet.backends.rules import deterministic as _deterministic
    return tuple(parts) if _deterministic(sig) else None


_tensor_methods = {}


def record_method(name, tensor, args, kwargs):
    """Records the tensor method `tensor.name(*args, **kwargs)`."""
    if name[-1] == "_" and name[:2] != "__" and name != "requires_grad_":
        raise BatchingError(
            f"the in-place method Tensor.{name} at {where(user_origin(2))} cannot be applied "
            f"to a lazy tensor (its stacked batch may be shared with other values); use the "
            f"out-of-place Tensor.{name[:-1]} instead")
    fn = _tensor_methods.get(name)
    if fn is None:
        fn = _tensor_methods[name] = getattr(torch.Tensor, name)
    return record(fn, (tensor, *args), kwargs)


def _new_signature(fn, args, kwargs, slots, key, origin, trace):
    template = (_template(args), _template(kwargs))
    in_avals = tuple(t.aval for t in slots)
    sig = Signature("op", fn, op_name(fn), template, in_avals, origin)
    sig.grad_enabled = key[1]
    values = iter([a.placeholder() for a in in_avals])
    ex_args, ex_kwargs = rebuild(template, values)
    try:
        with torch.no_grad(), _rng_untouched(in_avals):
            out = fn(*ex_args, **ex_kwargs)
    except Exception as e:
        raise _user_error(e, sig.name, origin, trace.instance) from None
    leaves = []
    sig.out_template = flatten_outputs(out, leaves)
    sig.tuple_out = sig.out_template.__class__ is tuple and all(
        x is SLOT for x in sig.out_template)
    if not leaves:
        raise BatchingError(
            f"{sig.name} at {where(origin)} (example {trace.instance}) returns no tensor "
            f"({type(out).__name__}); only ops that return tensors can take lazy inputs")
    sig.out_avals = tuple(aval(x.shape, x.dtype, x.device) for x in leaves)
    from dynnet.backends import rule_for

    sig.rule = rule_for(sig)
    if len(_signatures) > _MAX_SIGNATURES:
        _signatures.clear()
    _signatures[key] = sig
    return sig


class _rng_untouched:
    """Shape inference of random ops (dropout) must not move the random streams, so
    that results do not depend on which signatures were seen before."""

    def __init__(self, avals):
        self.cuda = sorted({a.device.index or 0 for a in avals if a.device.type == "cuda"})

    def __enter__(self):
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(d) for d in self.cuda]

    def __exit__(self, *exc):
        torch.set_rng_state(self.cpu_state)
        for d, state in zip(self.cuda, self.cuda_states):
            torch.cuda.set_rng_state(state, d)


def _user_error(e, name, origin, instance):
    """The same exception type, with a message that points at the user's code."""
    msg = f"{name} at {where(origin)} (example {instance}): {e}"
    try:
        return type(e)(msg)
    except Exception:
        return BatchingError(msg)


# -------------------- source nodes: inputs and constants --------------------


def _source_signature(kind, fn, name, out):
    key = (kind, fn, out)
    sig = _signatures.get(key)
    if sig is None:
        sig = Signature(kind, fn, name, None, (), None)
        sig.out_avals = (out,)
        _signatures[key] = sig
    if sig.origin is None:
        sig.origin = user_origin(3)
    return sig


def source(kind, fn, name, payload, shape, dtype, device):
    """Records a node with no inputs whose per-example value is `payload`."""
    trace = _active[-1]
    out = aval(shape, dtype, device)
    node = Node(_source_signature(kind, fn, name, out), (), 1, trace.instance)
    node.payload = payload
    trace.pending.append(node)
    if _capture is not None:
        _capture.append(node)
    return LazyTensor(node, 0, out)


def lazy_input(tensor):
    """A per-example input tensor as a lazy value (stacked once per group)."""
    return source("stack", None, "input", tensor, tensor.shape, tensor.dtype, tensor.device)


_SCALAR_DTYPES = {bool: torch.bool, int: torch.int64}
_DATA_ITEMS = (bool, int, float)


def data_item_class(value):
    """The class of `value` when it is per-example data `torch.tensor` turns into a
    constant: a Python bool, int or float, or a non-empty flat list or tuple of one of
    them (the class of its items); else None."""
    cls = value.__class__
    if cls in _DATA_ITEMS:
        return cls
    if (cls is list or cls is tuple) and value:
        item = value[0].__class__
        if item in _DATA_ITEMS and all(v.__class__ is item for v in value):
            return item
    return None


def _tensor_factory(fn, args, kwargs):
    """torch.tensor(python_data): a per-example constant, batched with its peers."""
    if len(args) != 1 or set(kwargs) - {"dtype", "device", "requires_grad"} or kwargs.get(
            "requires_grad"):
        return _eager_constant(fn, args, kwargs)
    data = args[0]
    cls = data.__class__
    datum = None
    if cls.__name__ == "_Datum":  # a segment's data input, while it is captured
        datum, data = data, data.value
        cls = data.__class__
    dtype = kwargs.get("dtype")
    shape = ()
    item = data_item_class(data)
    if item is not None and item is not cls:  # a flat list of numbers: `targets`
        cls, shape, data = item, (len(data),), list(data)
    if cls is float:
        dtype = dtype or torch.get_default_dtype()
    elif cls in _SCALAR_DTYPES:
        dtype = dtype or _SCALAR_DTYPES[cls]
    else:
        if datum is not None:
            args = (data,)
        return _eager_constant(fn, args, kwargs)
    device = kwargs.get("device")
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = source("const", dtype, "torch.tensor", data, shape, dtype, device)
    if datum is not None:
        _capture_data[id(out.node)] = datum.k
    return out


def _eager_constant(fn, args, kwargs):
    """A factory call with Python arguments: computed now, stacked with its peers. The
    signature's `fn` is the factory when the value depends on the arguments alone (no
    tensor among them, no random numbers), else None (dynnet/plans.py reads it)."""
    pure = fn in _PURE_FACTORIES and not holds_tensor((args, kwargs))
    device = None
    if pure and not _active[-1].executes:
        # A planning worker is a forked process, which must not touch an accelerator
        # (CUDA cannot run in a forked child): the value is made on the CPU, and the
        # process that executes the plan moves the stacked values (dynnet/plans.py).
        device = kwargs.get("device")
        device = torch.get_default_device() if device is None else torch.device(device)
        if device.type == "cpu":
            device = None
        else:
            kwargs = dict(kwargs, device="cpu")
    value = fn(*args, **kwargs)
    if not isinstance(value, torch.Tensor):
        return value
    return source("stack", fn if pure else None, op_name(fn), value, value.shape,
                  value.dtype, device or value.device)


def holds_tensor(obj):
    """True when `obj` (nested tuples, lists and dicts) holds a torch tensor."""
    if isinstance(obj, torch.Tensor):
        return True
    if obj.__class__ in (tuple, list):
        return any(holds_tensor(x) for x in obj)
    if obj.__class__ is dict:
        return any(holds_tensor(x) for x in obj.values())
    return False


_factories = {torch.tensor: _tensor_factory, torch.as_tensor: _tensor_factory}
for _f in (torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.eye,
           torch.linspace, torch.rand, torch.randn, torch.randint, torch.randperm,
           torch.zeros_like, torch.ones_like, torch.full_like):
    _factories[_f] = _eager_constant
_PURE_FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full,
                   torch.arange, torch.eye, torch.linspace}


from dynnet.lazy import LazyTensor, Node  # noqa: E402  (lazy.py imports this module)
