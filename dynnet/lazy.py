"""Lazy values: the per-example tensors that user code sees while a batch is traced.

A `LazyTensor` is one output of a recorded `Node`. It knows its per-example shape,
dtype and device (so user code can read `x.shape`), but has no value until the
trace executes the node's group. Torch functions, tensor methods and Python
operators applied to lazy tensors record new nodes instead of computing.

`__bool__`, `__int__`, `__float__`, `__index__` and `.item()` never concretize
silently: converted code pauses the example through the runtime helpers, anything
else gets a `ConcretizationError` that says where the value was created.
"""

import operator
import sys

import torch

from dynnet.errors import ConcretizationError, where


class Node:
    """One recorded op of one example.

    Attributes:
      sig: the batching signature; nodes with equal `sig` run as one batched call.
      inputs: the lazy tensors the op reads (the flattened tensor slots of its args).
      payload: per-example data of source nodes (inputs, constants) and of segment
        nodes (their data inputs); None otherwise.
      depth: 1 + max depth of unexecuted inputs (0 once executed).
      instance: index of the example that recorded it.
      group, row: after execution, the group result holding the value and its row.
    """

    __slots__ = ("sig", "inputs", "payload", "depth", "instance", "group", "row")

    def __init__(self, sig, inputs, depth, instance, payload=None):
        self.sig = sig
        self.inputs = inputs
        self.payload = payload
        self.depth = depth
        self.instance = instance
        self.group = None
        self.row = 0

    @property
    def origin(self):
        """`(filename, lineno)` of the user code that first recorded this op."""
        return self.sig.origin

    def __repr__(self):
        return f"Node({self.sig.name}, example={self.instance}, at {where(self.origin)})"


class LazyTensor:
    """Output `index` of `node`; `aval` holds its per-example shape, dtype, device."""

    __slots__ = ("node", "index", "aval", "__weakref__")

    def __init__(self, node, index, aval):
        self.node = node
        self.index = index
        self.aval = aval

    # -------------------- static facts --------------------
    @property
    def shape(self):
        return self.aval.shape

    @property
    def dtype(self):
        return self.aval.dtype

    @property
    def device(self):
        return self.aval.device

    @property
    def ndim(self):
        return len(self.shape)

    def dim(self):
        return len(self.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return self.shape.numel()

    def nelement(self):
        return self.shape.numel()

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def is_complex(self):
        return self.dtype.is_complex

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    @property
    def T(self):
        return tracing.record_method("t" if self.ndim <= 2 else "permute", self,
                                     () if self.ndim <= 2 else tuple(reversed(range(self.ndim))),
                                     {})

    @property
    def mT(self):
        return tracing.record_method("transpose", self, (-2, -1), {})

    @property
    def value(self):
        """The computed per-example tensor (only after the node's group executed)."""
        node = self.node
        if node.group is None:
            raise ConcretizationError(
                f"the lazy value created at {where(node.origin)} (example {node.instance}) "
                "has not been computed yet")
        return node.group.outputs[self.index][node.row]

    def __repr__(self):
        return (f"LazyTensor(shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"example={self.node.instance}, from {where(self.node.origin)})")

    def __hash__(self):
        return id(self)

    @property
    def layout(self):
        return torch.strided

    @property
    def itemsize(self):
        return self.dtype.itemsize

    @property
    def nbytes(self):
        return self.numel() * self.dtype.itemsize

    @property
    def data(self):
        return tracing.record_method("detach", self, (), {})

    def element_size(self):
        return self.dtype.itemsize

    def get_device(self):
        return self.device.index if self.device.type == "cuda" else -1

    # -------------------- recording --------------------
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if not hasattr(torch.Tensor, name):
            raise AttributeError(f"'Tensor' object has no attribute '{name}'")
        if not callable(getattr(torch.Tensor, name)):  # a property: `requires_grad`, `grad`
            if name in _STATIC_FALSE:
                return False
            raise ConcretizationError(
                f"Tensor.{name} of a lazy tensor (created at {where(self.node.origin)}, "
                f"example {self.node.instance}) is not known while the batch is traced: "
                "it belongs to the batched value that autograd sees, not to one example's. "
                "Decide on something the example or the model knows (torch.is_grad_enabled(), "
                "self.training) instead")
        return LazyMethod(self, name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return tracing.record(func, args, kwargs or {})

    def __getitem__(self, index):
        if _lazy_slice(index):
            raise ConcretizationError(
                f"slicing a lazy tensor at {where(tracing.user_origin(2))} (example "
                f"{self.node.instance}) with a bound that is itself a lazy value "
                "(x[:n], n computed from tensors): the slice's shape would depend on a "
                "value the batch has not computed. Take the bound first (n = int(n): the "
                "example waits there), or keep the shape and mask (x * (torch.arange("
                "len(x)) < n)).")
        return tracing.record(operator.getitem, (self, index), {})

    def __setitem__(self, index, value):
        raise ConcretizationError(
            f"in-place assignment into a lazy tensor (created at {where(self.node.origin)}) "
            "cannot be batched; build a new tensor instead (torch.cat, torch.where, "
            "Tensor.index_put)")

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (tracing.record(operator.getitem, (self, i), {}) for i in range(self.shape[0]))

    def _concretize(self, what):
        at = f"{what} of a lazy tensor at {where(tracing.user_origin(3))} (example " \
             f"{self.node.instance}) needs its value while the batch is being traced."
        caller = sys._getframe(2).f_code
        if caller in tracing.converted_codes:
            raise ConcretizationError(  # converted code, inside an operation of Python's
                f"{at} Python asked for it inside an operation that cannot pause for a "
                "value: `in` on a list, `%` or `.format` on a string held in a variable, "
                "str() of it from a library, a list indexed or sliced by a lazy value, a "
                "comparison of your objects (__lt__) inside sorted(). Take the value first "
                "where dynnet can wait (v = float(x), i = int(x), s = str(x)) and use "
                "that, or compute with tensor ops such as torch.where.")
        if caller.co_flags & 0x20 and not tracing.is_library_file(caller.co_filename):
            raise ConcretizationError(  # 0x20: CO_GENERATOR, a generator of the user's
                f"{at} It is tested in the generator function {caller.co_name}, which "
                "dynnet runs as it is (a generator cannot be converted, so it cannot wait "
                "for a value): test the value in the converted function, or compute with "
                "tensor ops (torch.where) inside the generator.")
        if caller.co_filename == _CALLS_FILE[0]:
            raise ConcretizationError(  # converted code called a C function: math.exp(x)
                f"{at} A function dynnet does not convert (such as math.exp, a numpy "
                "function, or str.format reading an attribute that holds the value) asked "
                "for it, and it cannot wait for the value. Take the value "
                "first where dynnet can wait (v = float(x) or x.tolist(), then "
                "math.exp(v)), or use a torch op on the lazy value (torch.exp(x)).")
        if not tracing.is_library_file(caller.co_filename):
            raise ConcretizationError(  # code of the user's that Python itself called
                f"{at} It is tested in {caller.co_name}, code of yours that converted code "
                "did not call itself: Python called it (an operator such as __add__, a "
                "property, a callback given to a library), or it is marked not to be "
                "converted; dynnet runs such code as it is, so it cannot wait for the "
                "value. Call it as a function or method from the converted code, or "
                "compute with tensor ops such as torch.where.")
        raise ConcretizationError(
            f"{at} It was asked for by code that dynnet runs as it is (a library, Python's "
            "own sorting or comparing of your objects, a function marked not to be "
            "converted), which cannot wait for the value; in a converted function dynnet "
            "waits for it. Take the value first in the converted function (v = float(x)), "
            "or compute with tensor ops such as torch.where.")

    def __bool__(self):
        self._concretize("bool()")

    def __format__(self, spec):  # where the converted format could not wait (a template
        # held in a variable): an error, not a placeholder in the user's text. str()
        # from a library (logging, an exception's message) gives the placeholder repr:
        # those must not fail
        self._concretize("formatting")

    def __int__(self):
        self._concretize("int()")

    def __float__(self):
        self._concretize("float()")

    def __index__(self):
        self._concretize("use as an index")

    def __array__(self, *args, **kwargs):
        self._concretize("conversion to a numpy array")


# converter/operators/call.py, whose helpers call what converted code calls (set there)
_CALLS_FILE = [None]


# properties that are False for any per-example lazy value (a dense, plain tensor)
_STATIC_FALSE = frozenset(("is_sparse", "is_sparse_csr", "is_quantized", "is_meta",
                           "is_mkldnn", "is_nested", "is_mps", "is_xpu", "is_ipu", "is_xla",
                           "is_vulkan", "is_maia", "is_mtia"))


class LazyMethod:
    """A tensor method bound to a lazy tensor, e.g. `x.sum`; calling it records."""

    __slots__ = ("tensor", "name")

    def __init__(self, tensor, name):
        self.tensor = tensor
        self.name = name

    def __call__(self, *args, **kwargs):
        return tracing.record_method(self.name, self.tensor, args, kwargs)

    def __repr__(self):
        return f"<lazy method Tensor.{self.name}>"


def _lazy_slice(index):
    """Whether `index` (of a subscript) holds a slice with a lazy bound."""
    parts = index if index.__class__ is tuple else (index,)
    for part in parts:
        if part.__class__ is slice and any(
                b.__class__ is LazyTensor for b in (part.start, part.stop, part.step)):
            return True
    return False


def collect_lazy(obj, out):
    """Appends the lazy tensors in `obj` (nested lists, tuples and dict values) to
    `out`, in order."""
    cls = obj.__class__
    if cls is LazyTensor:
        out.append(obj)
    elif cls is list or cls is tuple:
        for x in obj:
            collect_lazy(x, out)
    elif cls is dict:
        for x in obj.values():
            collect_lazy(x, out)


def _binary(op):
    def forward(self, other):
        return tracing.record(op, (self, other), {})

    def reverse(self, other):
        return tracing.record(op, (other, self), {})

    return forward, reverse


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    _fwd, _rev = _binary(_op)
    setattr(LazyTensor, f"__{_name}__", _fwd)
    setattr(LazyTensor, f"__r{_name}__", _rev)

for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(LazyTensor, f"__{_name}__", _binary(_op)[0])

for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(LazyTensor, f"__{_name}__",
            (lambda op: lambda self: tracing.record(op, (self,), {}))(_op))


from dynnet import tracing  # noqa: E402  (tracing.py imports this module)
