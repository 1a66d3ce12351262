"""Module blocks: a call of an nn.Module on lazy values is one node.

Modules known to be row-wise (each row of a stacked batch is computed as the module
computes one example) run directly on the stacked batch. Recurrent layers (`nn.LSTM`,
`nn.GRU`, `nn.RNN`), attention and Transformer layers over each example's own
sequence run as one call with the examples in the layer's batch dimension (a group
holds sequences of equal length). Any other module runs under torch.func.vmap, so
per-example semantics hold by construction.
"""

import torch
import torch.nn as nn

from dynnet.backends.rules import def_module_rule, flat_call, module_rules, vmap_rule

ROW_WISE = (nn.Linear, nn.Bilinear, nn.Embedding, nn.LayerNorm, nn.Dropout, nn.AlphaDropout,
            nn.Identity, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
            nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus, nn.Softsign, nn.Mish, nn.Hardtanh,
            nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.Threshold,
            nn.GLU)
if hasattr(nn, "RMSNorm"):
    ROW_WISE = ROW_WISE + (nn.RMSNorm,)
RECURRENT_CELLS = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def row_wise_rule(call):
    args, kwargs = call.args()
    return call.fn(*args, **kwargs)


row_wise_rule.prepare = lambda sig: flat_call(sig.fn, sig.template)


def cell_rule(call):
    """RNN cells accept [in] per example; stacked that is their own batched form. A
    tensor shared by every example (a learned initial state `h0`, not a lazy value) is
    expanded to the batch."""
    avals = call.sig.in_avals
    template = call.sig.template[0]
    shared = [_shared_tensors(t) for t in template]
    if avals and all(len(a.shape) == 2 and a.shape[0] == avals[0].shape[0] for a in avals) \
            and not any(shared):
        # [n, in] per example (an explicit batch of n rows, `torch.zeros(1, d)` states):
        # the stack's rows, [B * n, in], are the cell's own batched form
        args, kwargs = call.args()
        rows = avals[0].shape[0]
        out = call.fn(*_map_tensors(lambda t: t.reshape(-1, t.shape[-1]), args), **kwargs)
        return _map_tensors(lambda t: t.reshape(call.size, rows, t.shape[-1]), out)
    if any(len(a.shape) != 1 for a in avals):
        return vmap_rule(call)
    args, kwargs = call.args()
    if not any(shared):
        return call.fn(*args, **kwargs)
    if any(t.dim() != 1 for tensors in shared for t in tensors):
        return vmap_rule(call)
    args = [_expanded(t, a, call.size) for t, a in zip(template, args)]
    return call.fn(*args, **kwargs)


def _map_tensors(fn, obj):
    """`obj` (a tensor, or tuples and lists of them) with `fn` applied to each tensor."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(fn, x) for x in obj)
    return obj


def _shared_tensors(template):
    """The tensors of an argument's template that are shared by every example."""
    if isinstance(template, torch.Tensor):
        return [template]
    if template.__class__ is tuple or template.__class__ is list:
        return [t for item in template for t in _shared_tensors(item)]
    return []


def _expanded(template, value, size):
    """`value` with each tensor that `template` shares by every example expanded to a
    batch of `size` on a new dim 0 (a view: gradients sum over the examples)."""
    if isinstance(template, torch.Tensor):
        return value.expand(size, *value.shape)
    if template.__class__ is tuple or template.__class__ is list:
        return template.__class__(_expanded(t, v, size) for t, v in zip(template, value))
    return value


RECURRENT_LAYERS = (nn.LSTM, nn.GRU, nn.RNN)


def recurrent_layer_rule(call):
    """`nn.LSTM` / `nn.GRU` / `nn.RNN` over one example's sequence, for a group of
    examples whose sequences have the same length: one call with the examples side by
    side in the layer's own batch dimension.

    Per example the input is unbatched (`[T, D]`) or has its own batch of N
    (`[T, N, D]`, `[N, T, D]` with `batch_first`); stacked, the B examples become a
    batch of B (or B * N), and the outputs and final states are split back.
    """
    module = call.fn
    args, kwargs = call.args()
    x = args[0]
    if kwargs or len(args) > 2 or not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        return vmap_rule(call)
    hx = args[1] if len(args) > 1 else None
    size = call.size
    if hx is not None:  # an initial state shared by every example: expanded to the batch
        hx = _expanded(call.sig.template[0][1], hx, size)
    first = module.batch_first
    if x.dim() == 3:  # unbatched examples: [B, T, D]
        def state_in(h):  # [B, L, H] -> [L, B, H]
            return h.transpose(0, 1)

        def state_out(h):
            return h.transpose(0, 1)

        xb = x if first else x.transpose(0, 1)
    else:  # examples with their own batch N: [B, T, N, D] or [B, N, T, D]
        n = x.shape[1] if first else x.shape[2]

        def state_in(h):  # [B, L, N, H] -> [L, B * N, H]
            return h.transpose(0, 1).reshape(h.shape[1], size * n, h.shape[-1])

        def state_out(h):  # [L, B * N, H] -> [B, L, N, H]
            return h.reshape(h.shape[0], size, n, h.shape[-1]).transpose(0, 1)

        xb = x.reshape(size * n, *x.shape[2:]) if first else \
            x.transpose(0, 1).reshape(x.shape[1], size * n, x.shape[-1])
    if hx is not None:
        hx = tuple(map(state_in, hx)) if isinstance(hx, tuple) else state_in(hx)
    out, h_n = module(xb, hx)
    if x.dim() == 3:
        out = out if first else out.transpose(0, 1)
    elif first:
        out = out.reshape(size, n, *out.shape[1:])
    else:
        out = out.reshape(out.shape[0], size, n, out.shape[-1]).transpose(0, 1)
    h_n = tuple(map(state_out, h_n)) if isinstance(h_n, tuple) else state_out(h_n)
    return out, h_n


def sequence_layer_rule(call):
    """`nn.MultiheadAttention` and the Transformer layers over each example's unbatched
    sequences (`[T, E]`), for a group of examples whose sequences have the same
    lengths: one call with the examples in the layer's batch dimension. Masks and
    other options run under vmap."""
    module = call.fn
    args, kwargs = call.args()
    attention = isinstance(module, nn.MultiheadAttention)
    options = {"need_weights", "average_attn_weights"} if attention else set()
    if set(kwargs) - options or not args or any(
            not isinstance(a, torch.Tensor) or a.dim() != 3 for a in args):
        return vmap_rule(call)
    first = module.batch_first if attention else module.self_attn.batch_first
    if not first:
        args = [a.transpose(0, 1) for a in args]
    out = module(*args, **kwargs)
    if attention:  # (output, weights); the weights have the batch first already
        out, weights = out
        return (out if first else out.transpose(0, 1)), weights
    return out if first else out.transpose(0, 1)


def softmax_module_rule(call):
    if call.fn.dim is not None and call.fn.dim >= 0:
        return vmap_rule(call)
    return row_wise_rule(call)


def_module_rule(ROW_WISE, row_wise_rule)
def_module_rule(RECURRENT_CELLS, cell_rule)
def_module_rule(RECURRENT_LAYERS, recurrent_layer_rule)
def_module_rule((nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer),
                sequence_layer_rule)
def_module_rule((nn.Softmax, nn.LogSoftmax), softmax_module_rule)


def is_row_wise(module):
    """True if `module` can run directly on a stacked batch."""
    if type(module) in module_rules:
        return module_rules[type(module)] in (row_wise_rule, softmax_module_rule)
    if type(module) is nn.Sequential:
        return all(is_row_wise(m) for m in module)
    return False


def module_rule(module):
    """The rule for a module with no rule registered for its exact class."""
    if is_row_wise(module):
        return row_wise_rule
    from dynnet.backends.blocks import block_rule

    return block_rule(module)
