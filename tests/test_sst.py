"""The tree-LSTM of the benchmarks (dims 128) on 500 SST trees: batched == eager."""

import torch

import dynnet
from dynnet.data import read_trees
from dynnet.vocab import Vocab
from tests.test_engine import ModuleTreeLSTM


class SSTTreeLSTM(ModuleTreeLSTM):
    def __init__(self, vocab_size):
        super().__init__(dim=128)
        self.embed = torch.nn.Embedding(vocab_size, 128)


def test_sst_500_trees_losses_and_gradients(sst_dir):
    trees = read_trees(sst_dir / "dev.txt")[:500]
    vocab = Vocab.from_trees(trees)
    vocab.index_trees(trees)
    model = SSTTreeLSTM(len(vocab))

    losses = model.loss.batch(trees)
    losses.mean().backward()
    batched_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # the eager oracle, with sparse embedding gradients: one dense [V, 128] gradient per
    # word lookup would make the per-example backward take minutes
    model.embed.sparse = True
    with dynnet.run_eagerly():
        eager = torch.stack([model.loss(t) for t in trees])
    eager.mean().backward()
    torch.testing.assert_close(losses, eager, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), batched_grads):
        want = p.grad.to_dense() if p.grad.is_sparse else p.grad
        torch.testing.assert_close(g, want, atol=1e-4, rtol=1e-4)
