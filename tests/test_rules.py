"""Every batching rule family against the per-example oracle (values and gradients)."""

import operator
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dynnet
from dynnet.backends import batching_rules
from dynnet.backends.rules import vmap_rule
from tests.helpers import assert_batch_matches_loop

W = torch.randn(5, 4, requires_grad=True)
V = torch.randn(4, requires_grad=True)
IDX = torch.tensor([2, 0])

# name -> (per-example function, per-example input shapes)
CASES = {
    "add_scalar": (lambda x: x + 1.5, [(3, 4)]),
    "radd_rsub_rmul": (lambda x: 2 - x * 3 + 1, [(4,)]),
    "broadcast_lower_rank": (lambda x, y: x * y, [(3, 4), (4,)]),
    "broadcast_scalar_example": (lambda x, y: x * y, [(3, 4), ()]),
    "shared_higher_rank": (lambda x: x + W, [(4,)]),
    "where": (lambda x, y: torch.where(x > 0, x, y), [(3, 4), (4,)]),
    "unary_chain": (lambda x: torch.exp(torch.tanh(x)).sigmoid().relu(), [(2, 3)]),
    "clamp_pow": (lambda x: x.clamp(-0.5, 0.5) ** 2, [(4,)]),
    "gelu_softplus": (lambda x: F.softplus(F.gelu(x)), [(4,)]),
    "sum_all": (lambda x: x.sum(), [(3, 4)]),
    "mean_dim": (lambda x: x.mean(dim=0), [(3, 4)]),
    "sum_neg_keepdim": (lambda x: torch.sum(x, -1, keepdim=True), [(3, 4)]),
    "max_dim": (lambda x: x.max(dim=1).values * 1.0, [(3, 4)]),
    "max_all": (lambda x: x.max(), [(3, 4)]),
    "max_binary": (lambda x, y: torch.max(x, y), [(4,), (4,)]),
    "argmax_all": (lambda x: x.argmax(), [(3, 4)]),
    "norm": (lambda x: x.norm(), [(3, 4)]),
    "logsumexp": (lambda x: torch.logsumexp(x, 1), [(3, 4)]),
    "softmax": (lambda x: F.softmax(x, dim=0), [(3, 4)]),
    "log_softmax_neg": (lambda x: x.log_softmax(-1), [(3, 4)]),
    "cumsum": (lambda x: x.cumsum(1), [(3, 4)]),
    "cat": (lambda x, y: torch.cat([x, y]), [(2, 4), (3, 4)]),
    "cat_dim1_shared": (lambda x: torch.cat([x, W[:3]], dim=1), [(3, 2)]),
    "stack": (lambda x, y: torch.stack([x, y], dim=1), [(3,), (3,)]),
    "split": (lambda x: torch.split(x, 2)[1] * 1.0, [(5, 2)]),
    "chunk_method": (lambda x: x.chunk(2, dim=1)[0] + 0.0, [(3, 4)]),
    "unbind": (lambda x: x.unbind(0)[2] * 1.0, [(3, 4)]),
    "reshape": (lambda x: x.reshape(2, -1), [(3, 4)]),
    "view_flatten": (lambda x: x.view(12).flatten(), [(3, 4)]),
    "squeeze_unsqueeze": (lambda x: x.unsqueeze(0).squeeze(), [(3, 1, 4)]),
    "unsqueeze_neg": (lambda x: x.unsqueeze(-1), [(3, 4)]),
    "transpose": (lambda x: x.transpose(0, 1), [(3, 4)]),
    "permute": (lambda x: x.permute(2, 0, 1), [(2, 3, 4)]),
    "t_and_T": (lambda x: x.t() + x.T, [(3, 3)]),
    "expand": (lambda x: x.expand(3, 4), [(4,)]),
    "repeat": (lambda x: x.repeat(2, 1), [(3, 4)]),
    "getitem_int": (lambda x: x[1], [(3, 4)]),
    "getitem_slice": (lambda x: x[1:, ::2], [(3, 4)]),
    "getitem_ellipsis_none": (lambda x: x[..., None, 0], [(3, 4)]),
    "getitem_shared_index": (lambda x: x[IDX], [(3, 4)]),
    "getitem_lazy_index": (lambda x, i: x[i], [(3, 4), "index"]),
    "index_select": (lambda x: x.index_select(1, IDX), [(3, 4)]),
    "gather": (lambda x, i: x.gather(0, i), [(3, 4), "index2"]),
    "matmul_shared": (lambda x: x @ W.T, [(4,)]),
    "matmul_shared_2d": (lambda x: torch.matmul(x, W.T), [(3, 4)]),
    "matmul_shared_left": (lambda x: W @ x, [(4,)]),
    "matmul_both": (lambda x, y: x @ y, [(3, 4), (4, 2)]),
    "dot_vectors": (lambda x, y: torch.dot(x, y), [(4,), (4,)]),
    "linear": (lambda x: F.linear(x, W, None), [(4,)]),
    "embedding": (lambda i: F.embedding(i, W), ["index"]),
    "layer_norm": (lambda x: F.layer_norm(x, (4,)), [(3, 4)]),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, t), [(5,), "target"]),
    "cross_entropy_rows": (lambda x, t: F.cross_entropy(x, t), [(3, 5), "targets"]),
    "cross_entropy_sum": (lambda x, t: F.cross_entropy(x, t, reduction="sum"),
                          [(3, 5), "targets"]),
    "nll_loss": (lambda x, t: F.nll_loss(x.log_softmax(-1), t), [(5,), "target"]),
    "mse_loss": (lambda x, y: F.mse_loss(x, y), [(3, 4), (3, 4)]),
    "bce_logits_shared_target": (lambda x: F.binary_cross_entropy_with_logits(
        x, torch.ones(4) * 0.3), [(4,)]),
    "dropout_eval": (lambda x: F.dropout(x, 0.5, training=False), [(4,)]),
    "zeros_like_full": (lambda x: torch.zeros_like(x) + torch.full((4,), 2.0) * x, [(4,)]),
    "to_dtype": (lambda x: (x > 0).float() * x.double().float(), [(4,)]),
    "operator_matmul_vector": (lambda x: operator.matmul(x, V), [(3, 4)]),
    "torch_tensor_constant": (lambda x: x * torch.tensor(2.0), [(4,)]),
    "python_scalar_reduce": (lambda x: x.sum() / x.shape[0], [(3,)]),
}


def _example(spec, k, rng):
    if spec == "index":
        return torch.randint(0, 3, (2,), generator=rng)
    if spec == "index2":
        return torch.randint(0, 3, (2, 4), generator=rng)
    if spec == "target":
        return torch.randint(0, 5, (), generator=rng)
    if spec == "targets":
        return torch.randint(0, 5, (3,), generator=rng)
    return torch.randn(spec, generator=rng).requires_grad_()


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_per_example(name):
    fn, specs = CASES[name]
    rng = torch.Generator().manual_seed(len(name))
    examples = [tuple(_example(s, k, rng) for s in specs) for k in range(4)]
    f = dynnet.function(lambda *xs: fn(*xs))
    assert_batch_matches_loop(f, examples, [W, V])


def test_registry_covers_the_families():
    for fn in [torch.add, torch.Tensor.sum, torch.cat, torch.stack, torch.split, torch.chunk,
               torch.Tensor.reshape, torch.Tensor.__getitem__, torch.matmul, F.linear,
               F.embedding, F.softmax, F.log_softmax, F.cross_entropy, torch.Tensor.max]:
        assert fn in batching_rules and batching_rules[fn] is not vmap_rule, fn


class NotRowWise(nn.Module):
    """A user module with cross-position ops: must run under the vmap fallback."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).softmax(0) * x.sum(0)


@pytest.mark.parametrize("module", [nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)),
                                    nn.LSTMCell(4, 3), nn.GRUCell(4, 3), nn.LayerNorm(4),
                                    NotRowWise(), nn.Softmax(dim=0)])
def test_module_blocks(module):
    shapes = (4,) if not isinstance(module, (NotRowWise, nn.Softmax)) else (3, 4)
    f = dynnet.function(lambda x: module(x))
    xs = [(torch.randn(*shapes, requires_grad=True),) for _ in range(5)]
    assert_batch_matches_loop(f, xs, module.parameters())


RECURRENT_LAYERS = {
    "lstm": lambda first: nn.LSTM(4, 3, batch_first=first),
    "gru-2-layers-bidirectional": lambda first: nn.GRU(4, 3, num_layers=2, bidirectional=True,
                                                       batch_first=first),
    "rnn": lambda first: nn.RNN(4, 3, nonlinearity="relu", batch_first=first),
    "lstm-proj": lambda first: nn.LSTM(4, 3, proj_size=2, batch_first=first),
}


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("layout", ["unbatched", "own-batch-of-2"])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("kind", list(RECURRENT_LAYERS))
def test_recurrent_layers_over_variable_length_sequences(kind, first, layout):
    """`nn.LSTM` (GRU, RNN) over each example's own sequence: one call per group of
    equal lengths, the examples side by side in the layer's batch (it used to fail:
    functorch has no vmap rule for aten::lstm). With and without an initial state."""
    torch.manual_seed(0)
    layer = RECURRENT_LAYERS[kind](first)
    lstm = isinstance(layer, nn.LSTM)
    dirs = 2 if layer.bidirectional else 1
    out_size = layer.proj_size or layer.hidden_size

    @dynnet.function
    def run(x, h0):
        out, state = layer(x) if h0 is None else layer(x, h0)
        states = state if isinstance(state, tuple) else (state,)
        return out.tanh().sum(-1), [s * 2 for s in states]

    g = torch.Generator().manual_seed(1)
    examples = []
    for k in range(7):
        t = 2 + k % 3  # three lengths
        n = 2 if layout == "own-batch-of-2" else None
        shape = (t, 4) if n is None else ((n, t, 4) if first else (t, n, 4))
        x = torch.randn(*shape, generator=g).requires_grad_()
        h0 = None
        if k % 2:  # half the examples pass an initial state
            lead = (layer.num_layers * dirs,) if n is None else (layer.num_layers * dirs, n)
            h = torch.randn(*lead, out_size, generator=g).requires_grad_()
            c = torch.randn(*lead, layer.hidden_size, generator=g).requires_grad_()
            h0 = (h, c) if lstm else h
        examples.append((x, h0))
    assert_batch_matches_loop(run, [e for e in examples if e[1] is None], layer.parameters())
    assert_batch_matches_loop(run, [e for e in examples if e[1] is not None],
                              layer.parameters())


SEQUENCE_LAYERS = {
    "attention": lambda first: nn.MultiheadAttention(4, 2, batch_first=first),
    "encoder-layer": lambda first: nn.TransformerEncoderLayer(
        4, 2, dim_feedforward=8, dropout=0.0, batch_first=first),
    "decoder-layer": lambda first: nn.TransformerDecoderLayer(
        4, 2, dim_feedforward=8, dropout=0.0, batch_first=first),
}


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("kind", list(SEQUENCE_LAYERS))
def test_attention_and_transformer_layers_over_each_examples_sequence(kind, first):
    """Per example `[T, E]` sequences of several lengths: one call per group of equal
    lengths (under vmap, functorch warned of missing batching rules), values and
    gradients as example by example."""
    torch.manual_seed(0)
    layer = SEQUENCE_LAYERS[kind](first)

    @dynnet.function
    def run(x, memory):
        if kind == "attention":
            out, weights = layer(x, memory, memory)
            unaveraged, _ = layer(x, memory, memory, average_attn_weights=False)
            return out.tanh(), weights, unaveraged.sum()
        if kind == "encoder-layer":
            return layer(x).tanh()
        return layer(x, memory).tanh()

    g = torch.Generator().manual_seed(2)
    examples = [(torch.randn(2 + k % 3, 4, generator=g).requires_grad_(),
                 torch.randn(3 + k % 2, 4, generator=g).requires_grad_()) for k in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no functorch fallback warning
        assert_batch_matches_loop(run, examples, layer.parameters())


def test_recurrent_cells_batch_directly_in_a_fresh_interpreter(tmp_path):
    """The module rules (backends/modules.py) are registered when dynnet is imported,
    not when some module first needs them: a GRUCell as the first module a program
    meets used to fall back to vmap (functorch warns it has no rule for gru_cell)."""
    import subprocess
    import sys

    program = tmp_path / "gru.py"
    program.write_text(
        "import warnings, torch, dynnet\n"
        "warnings.simplefilter('error')\n"
        "cell = torch.nn.GRUCell(4, 4)\n"
        "@dynnet.function\n"
        "def f(x):\n"
        "    return cell(x, x)\n"
        "with dynnet.profile() as p:\n"
        "    f.batch([torch.randn(4) for _ in range(3)])\n"
        "from dynnet.backends.modules import cell_rule\n"
        "assert [s.rule for s in p.group_sizes if s.kind == 'op'] == [cell_rule]\n"
    )
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


D_STATE = 4


@pytest.mark.parametrize("case", ["gru-cell-loop", "gru-cell-once", "lstm-cell-pair",
                                  "shared-input", "lstm-layer", "gru-layer-unbatched"])
def test_a_state_shared_by_every_example_is_broadcast(case):
    """A learned initial state (a parameter, not a lazy value) given to a recurrent cell
    or layer: each example uses it as plain PyTorch does, and its gradient sums over
    the examples."""
    torch.manual_seed(0)
    embed = nn.Embedding(10, D_STATE)
    gru_cell, lstm_cell = nn.GRUCell(D_STATE, D_STATE), nn.LSTMCell(D_STATE, D_STATE)
    lstm, gru = nn.LSTM(D_STATE, D_STATE, num_layers=2), nn.GRU(D_STATE, D_STATE)
    h0 = nn.Parameter(torch.randn(D_STATE))
    c0 = nn.Parameter(torch.randn(D_STATE))
    layer_h0 = nn.Parameter(torch.randn(2, 1, D_STATE))
    gru_h0 = nn.Parameter(torch.randn(1, D_STATE))

    @dynnet.function
    def encode(ids):
        xs = embed(torch.tensor(ids))
        if case == "gru-cell-loop":
            h = h0
            for x in xs:
                h = gru_cell(x, h)
            return h
        if case == "gru-cell-once":
            return gru_cell(xs[0], h0)
        if case == "lstm-cell-pair":
            h, c = lstm_cell(xs[-1], (h0, c0))
            return h + c
        if case == "shared-input":
            return gru_cell(h0, torch.tanh(xs.sum(0)))
        if case == "lstm-layer":
            _, (h, _) = lstm(xs[:, None], (layer_h0, torch.zeros(2, 1, D_STATE)))
            return h[-1, 0]
        out, h = gru(xs, gru_h0)
        return out.sum(0) + h[0]

    batch = [[1, 2], [3], [4, 5, 6], [7, 8], [9]]
    params = [embed.weight, h0, c0, layer_h0, gru_h0]
    assert_batch_matches_loop(encode, batch, [p for p in params if p.requires_grad],
                              grad_atol=1e-5)
