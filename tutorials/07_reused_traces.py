"""Replaying the trace of an example seen before instead of running its code again.

    python tutorials/07_reused_traces.py [--small]

Every batch runs your Python on every example to record what to compute: for a
tree-LSTM, one call of ``encode`` per node of every tree, as long as executing the batch
on a CPU. From the second epoch on, those are the same trees, and the same calls record
the same nodes. ``dynnet.function(reuse_traces=True)`` keeps what each example recorded,
keyed by the identity of its arguments, and replays it when a later batch holds the
same objects, in any batch and any order, recording the same nodes in the same order
(so the results are the same bits):

    class ReplayingTreeLSTM(NaryTreeLSTM):
        loss = dynnet.function(NaryTreeLSTM.loss, reuse_traces=True)

A replay does not run your code, so its side effects (other than ``print``) do not
happen again. It is exact when what an example records depends only on the example
and the model: the cache sees the grad mode, the model's ``train()``/``eval()`` mode,
its settings and parameters, and records again when they change; an example whose
code reads a parameter's value (``if self.gate > 0``, ``self.scale.item()``) is traced
every time. It cannot see an example you change in place: call ``f.clear_traces()``
then.

A batch that comes back whole (an evaluation set in fixed batches) goes further: the
second time it comes with every example replayed (usually its third pass), it is
planned once, and from then on it runs from that plan, with no Python per node
(dynnet/replayed_batches.py).
"""

import sys

import torch

import dynnet
from dynnet import synthetic
from dynnet.models import NaryTreeLSTM
from dynnet.vocab import Vocab


class ReplayingTreeLSTM(NaryTreeLSTM):
    loss = dynnet.function(NaryTreeLSTM.loss, reuse_traces=True)


def main(small=False):
    torch.manual_seed(0)
    trees = synthetic.sentiment_trees(256 if small else 2048, seed=1)
    vocab = Vocab(synthetic.VOCABULARY)
    vocab.index_trees(trees)
    model = ReplayingTreeLSTM(len(vocab), embed_dim=32, hidden_dim=32)
    plain = NaryTreeLSTM(len(vocab), embed_dim=32, hidden_dim=32)
    plain.load_state_dict(model.state_dict())

    def epoch(m, seed):
        optimizer = torch.optim.Adam(m.parameters(), lr=0.01)
        order = torch.randperm(len(trees), generator=torch.Generator().manual_seed(seed))
        shuffled = [trees[i] for i in order]  # other batches every epoch
        with dynnet.profile() as profile:
            for i in range(0, len(shuffled), 32):
                optimizer.zero_grad()
                m.loss.batch(shuffled[i:i + 32]).mean().backward()
                optimizer.step()
        return profile

    for k in range(3):
        replaying = epoch(model, seed=k)
        tracing = epoch(plain, seed=k)
        print(f"epoch {k + 1}: {replaying.replayed} of {len(trees)} trees replayed; "
              f"tracing took {replaying.trace_seconds:.3f} s against "
              f"{tracing.trace_seconds:.3f} s running the code")
    # a replay records the nodes the code would, in the order it would: the same bits
    same = all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))
    print("same parameters as running the code every time:", same)

    # An evaluation set in fixed batches: a batch that comes back whole, with the same
    # trees in the same order, runs from a plan kept for it (its replayed nodes
    # scheduled and every gather index made once, the second time it comes), with no
    # Python per node; the same bits again.
    dev = [trees[i:i + 32] for i in range(0, 128, 32)]
    for k in range(4):
        with torch.no_grad(), dynnet.profile() as profile:
            losses = torch.cat([model.loss.batch(batch) for batch in dev])
        print(f"evaluation pass {k + 1}: {profile.replayed_batches} of {len(dev)} batches "
              f"from kept plans, {1e6 * profile.trace_seconds / profile.nodes:.2f} µs of "
              "Python a node outside execution")
    with torch.no_grad():
        for _ in range(2):  # the first no_grad pass makes the plain model's segments
            expected = torch.cat([plain.loss.batch(batch) for batch in dev])
    print("kept plans give the same losses:", torch.equal(losses, expected))

    # A change the cache can see: the model's mode. The next batch records anew.
    model.eval()
    with torch.no_grad(), dynnet.profile() as profile:
        model.loss.batch(trees[:32])
    print(f"after model.eval(): {profile.replayed} replayed")

    # A change it cannot see: an example changed in place. Clear the traces.
    tree = trees[0]
    tree.label = 0 if tree.label else 1
    model.loss.clear_traces()
    with torch.no_grad():
        batched = model.loss.batch(trees[:4])
        with dynnet.run_eagerly():
            eager = torch.stack([model.loss(t) for t in trees[:4]])
    print("after clear_traces, the changed label counts:", torch.allclose(batched, eager))


if __name__ == "__main__":
    main(small="--small" in sys.argv)
