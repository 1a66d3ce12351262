"""Module blocks: a call of an nn.Module on lazy values is one node.

Modules known to be row-wise (each row of a stacked batch is computed as the module
computes one example) run directly on the stacked batch. Any other module runs
under torch.func.vmap, so per-example semantics hold by construction.
"""

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
    """RNN cells accept [in] per example; stacked that is their own batched form."""
    if len(call.sig.in_avals[0].shape) != 1:
        return vmap_rule(call)
    return row_wise_rule(call)


def softmax_module_rule(call):
    if call.fn.dim is not None and call.fn.dim >= 0:
        return vmap_rule(call)
    return row_wise_rule(call)


def_module_rule(ROW_WISE, row_wise_rule)
def_module_rule(RECURRENT_CELLS, cell_rule)
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
