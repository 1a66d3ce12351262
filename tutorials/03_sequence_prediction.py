"""Sequence prediction: an LSTM language model learns a few Penn Treebank sentences,
then recites them, each generation stopping at its own end token, all batched.

    python tutorials/03_sequence_prediction.py [--small]

``SequencePredictor.loss(ids)`` is written for ONE sentence: a Python ``for`` loop over
its tokens. ``loss.batch(sentences)`` runs sentences of different lengths together:
step t of every sentence that is still running shares one LSTM call.
``generate(prefix)`` decodes until the model emits ``</s>``, a data-dependent loop;
``generate.batch(prefixes)`` pauses every example at each step, runs the pending
steps of all of them batched, and lets the ones that stopped drop out.

Without the shared PTB data (``dynnet.data.ptb_split``), trains on phrases of
dynnet's generated treebank.
"""

import sys
import time

import torch

from dynnet import synthetic
from dynnet.data import BucketBatchSampler, ptb_split
from dynnet.models import SequencePredictor
from dynnet.vocab import Vocab

BOS, EOS = "<s>", "</s>"


def load(count):
    try:
        sentences = ptb_split("valid")
        source = "PTB valid"
    except FileNotFoundError:
        sentences = [t.leaves() for t in synthetic.sentiment_trees(4 * count, seed=0)]
        source = "synthetic phrases"
    short = [s for s in sentences if 6 <= len(s) <= 12][:count]
    return short, source


def main(small=False):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sentences, source = load(12 if small else 48)
    vocab = Vocab.build(sentences, specials=(BOS, EOS))
    ids = [vocab.encode(s) for s in sentences]
    print(f"{source}: learning {len(ids)} sentences by heart ({len(vocab)} tokens)")

    lm = SequencePredictor(len(vocab), embed_dim=64, hidden_dim=128, cell="lstm",
                           eos_id=vocab[EOS], bos_id=vocab[BOS])
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-2)
    batches = BucketBatchSampler([len(s) for s in ids], batch_size=12, seed=0)

    print(f"before training: perplexity {lm.perplexity(ids):.1f} "
          f"(a uniform guess: {len(vocab)})")
    epochs = 40 if small else 60
    start = time.perf_counter()
    for epoch in range(epochs):
        for indices in batches:
            batch = [ids[i] for i in indices]
            optimizer.zero_grad()
            loss = lm.loss.batch(batch).mean()  # mean token NLL per sentence, [B]
            loss.backward()
            optimizer.step()
        if (epoch + 1) % (epochs // 4) == 0:
            print(f"epoch {epoch + 1}: perplexity {lm.perplexity(ids):.2f}")
    seconds = time.perf_counter() - start
    print(f"{epochs * len(ids) / seconds:.0f} sentences/s")

    # Recite every sentence from its first two words. Each example stops when the
    # model emits </s>: a data-dependent loop, decoded for all sentences together.
    lm.eval()
    prefixes = [s[:2] for s in ids]
    with torch.no_grad():
        greedy = lm.generate.batch(prefixes, max_len=20)
        sampled = lm.generate.batch(prefixes[:3], max_len=20, greedy=False,
                                    temperature=1.5)
    recited = sum(p + list(g) == s + [vocab[EOS]] for p, g, s in zip(prefixes, greedy, ids))
    for prefix, g in list(zip(prefixes, greedy))[:3]:
        print(f"{' '.join(vocab.decode(prefix))} | {' '.join(vocab.decode(g))}")
    print(f"recited {recited} of {len(ids)} sentences exactly "
          f"(continuations of {min(map(len, greedy))} to {max(map(len, greedy))} tokens)")
    print("sampled at temperature 1.5:")
    for prefix, g in zip(prefixes, sampled):
        print(f"{' '.join(vocab.decode(prefix))} | {' '.join(vocab.decode(g))}")


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:])
