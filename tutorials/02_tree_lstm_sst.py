"""Tree-LSTM sentiment classification on the Stanford Sentiment Treebank.

    python tutorials/02_tree_lstm_sst.py [--small] [--synthetic]

Reads SST from the shared data folder (``dynnet.data.sst_split``; set DYNNET_DATA to
the folder holding ``sst/``). Without it (or with ``--synthetic``), uses dynnet's
generated treebank instead, where negations flip the sentiment of their subtree.

The loop below is what ``dynnet train tree-lstm --data DIR --binary --batch-size 25
--lr 0.002 --model-args '{"node_loss": true, "dropout": 0.3}'`` runs (with
checkpoints, metrics and resume added), written out so you can change it:

- the binary task: roots labelled neutral are dropped; node labels 0,1 -> 0 and
  3,4 -> 1; neutral inner nodes get ``IGNORE_LABEL`` so the node loss skips them;
- ``BucketBatchSampler`` batches trees of similar size;
- ``model.loss.batch(trees)`` is one loss per tree, computed batched.
"""

import sys
import tempfile
import time

import torch

import dynnet.models
from dynnet import synthetic
from dynnet.data import BucketBatchSampler, binary_label, sst_split
from dynnet.models import NaryTreeLSTM
from dynnet.models.classifier import IGNORE_LABEL
from dynnet.vocab import Vocab


def load(small, use_synthetic):
    try:
        if use_synthetic:
            raise FileNotFoundError("--synthetic")
        train, dev = sst_split("train"), sst_split("dev")
        source = "SST"
    except FileNotFoundError:
        train, dev, _ = synthetic.splits(5000, 500, 0)
        source = "the synthetic treebank"
    if small:
        train, dev = train[::len(train) // 300], dev[::len(dev) // 200]  # spread out:
        # the SST files are roughly sorted by label
    return binary(train), binary(dev), source


def binary(trees):
    """The binary task (see the module docstring)."""
    kept = [t for t in trees if binary_label(t.label) is not None]
    for tree in kept:
        for node in tree.nodes():
            label = binary_label(node.label)
            node.label = IGNORE_LABEL if label is None else label
    return kept


@torch.no_grad()
def accuracy(model, trees):
    model.eval()
    logits = model.predict.batch(trees)  # [B, 2]: root scores
    model.train()
    predicted = logits.argmax(-1)
    return (predicted == torch.tensor([t.label for t in trees])).float().mean().item()


def main(small=False, use_synthetic=False):
    torch.manual_seed(0)
    torch.set_num_threads(1)  # many small ops: extra threads mostly contend
    train, dev, source = load(small, use_synthetic)
    vocab = Vocab.from_trees(train)
    vocab.index_trees(train)
    vocab.index_trees(dev)  # words not seen in training map to <unk>
    print(f"{source}: {len(train)} training trees, {len(dev)} dev trees, "
          f"{len(vocab)} words")

    dim = 32 if small else 128
    model = NaryTreeLSTM(len(vocab), embed_dim=dim, hidden_dim=dim, num_classes=2,
                         node_loss=True, dropout=0.0 if small else 0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = BucketBatchSampler([t.size() for t in train], batch_size=25, seed=0)

    print(f"before training: dev accuracy {accuracy(model, dev):.3f}")
    for epoch in range(2 if small else 5):
        start, total = time.perf_counter(), 0.0
        for indices in batches:  # a new shuffle every epoch
            trees = [train[i] for i in indices]
            optimizer.zero_grad()
            loss = model.loss.batch(trees).mean()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(trees)
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1}: loss {total / len(train):.4f}, "
              f"dev accuracy {accuracy(model, dev):.3f}, {len(train) / seconds:.0f} trees/s")

    with tempfile.TemporaryDirectory() as folder:  # config.json + weights.safetensors
        model.save(folder)
        again = dynnet.models.load(folder)
    print(f"saved and reloaded: dev accuracy {accuracy(again, dev):.3f}")


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:], use_synthetic="--synthetic" in sys.argv[1:])
