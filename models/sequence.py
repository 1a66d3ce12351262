"""A recurrent language model over token ids, written one sentence at a time.

    lm = SequencePredictor(len(vocab), eos_id=vocab["</s>"], bos_id=vocab["<s>"])
    loss = lm.loss.batch(sentences).mean()          # mean token NLL per sentence
    lm.perplexity(sentences)                        # exp(total NLL / total tokens)
    lm.generate.batch(prefixes, max_len=20)         # [[ids...], ...], one list per prefix

A sentence ``ids`` is scored as the sequence ``ids + [eos_id]`` predicted from
``[bos_id] + ids`` (left to right, each token from the ones before it). Without
``bos_id`` the first token is context only; without ``eos_id`` no end token is
predicted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import dynnet
from dynnet.models.classifier import check_dropout, init_embedding, row_wise
from dynnet.models.io import SaveLoadMixin, register_model
from dynnet.models.vectors import load_into_embedding

__all__ = ["RecurrentStep", "SequencePredictor", "TokenHead", "TokenIds"]

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


class TokenIds(list):
    """A list of token ids (what ``generate`` returns).

    A list subclass so that ``generate.batch`` returns one list per example even when
    all examples generated the same number of tokens (``.batch`` stacks plain lists
    leaf by leaf).
    """


@row_wise
class RecurrentStep(nn.Module):
    """One time step: embed the token, dropout, then the recurrent cell.

    ``step(token, state)`` -> the new state, ``(h, c)`` for an LSTM and ``(h,)`` for a
    GRU; ``state`` None starts from zeros.
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, cell="lstm", dropout=0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.embed = init_embedding(nn.Embedding(vocab_size, embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.cell = CELLS[cell](embed_dim, hidden_dim)
        self.is_lstm = cell == "lstm"

    def forward(self, token, state=None):
        x = self.dropout(self.embed(token))
        if self.is_lstm:
            return self.cell(x, state)
        return (self.cell(x, None if state is None else state[0]),)


@row_wise
class TokenHead(nn.Module):
    """Dropout and a linear layer from hidden vectors to next-token scores.

    ``head(h)`` returns logits ``[..., vocab]``; ``head(hs, targets)`` with ``hs``
    ``[..., n, hidden]`` and ``targets`` ``[..., n]`` returns the summed negative
    log-likelihood of the targets, ``[...]``.
    """

    def __init__(self, hidden_dim, vocab_size, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, h, targets=None):
        logits = self.out(self.dropout(h))
        if targets is None:
            return logits
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              reduction="none")
        return nll.reshape(targets.shape).sum(-1)


@register_model("lm")
class SequencePredictor(nn.Module, SaveLoadMixin):
    """A left-to-right LSTM or GRU language model.

    Args:
        vocab_size: number of token ids.
        embed_dim, hidden_dim: embedding and recurrent state sizes.
        cell: "lstm" or "gru".
        eos_id: the end token, predicted after each sentence and where ``generate``
            stops; None for none.
        bos_id: the start token fed before each sentence; None to use the first token
            as context only.
        dropout: dropout on the embeddings and before the output layer.
    """

    def __init__(self, vocab_size, embed_dim=128, hidden_dim=128, cell="lstm", eos_id=None,
                 bos_id=None, dropout=0.0):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("eos_id", eos_id), ("bos_id", bos_id)):
            if value is not None and not (isinstance(value, int) and not isinstance(
                    value, bool) and 0 <= value < vocab_size):
                raise ValueError(f"{name} must be None or an id below vocab_size "
                                 f"({vocab_size}), got {value!r}")
        check_dropout(dropout)
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.cell_type = cell
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.dropout = float(dropout)
        self.step = RecurrentStep(vocab_size, embed_dim, hidden_dim, cell, dropout)
        self.head = TokenHead(hidden_dim, vocab_size, dropout)

    def config(self):
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                "hidden_dim": self.hidden_dim, "cell": self.cell_type, "eos_id": self.eos_id,
                "bos_id": self.bos_id, "dropout": self.dropout}

    @property
    def embedding(self):
        """The input token embedding (an ``nn.Embedding``)."""
        return self.step.embed

    def load_vectors(self, vocab, path):
        """Copies pretrained vectors of ``vocab``'s words into the input embedding;
        returns how many words had one."""
        return load_into_embedding(self.embedding, vocab, path)

    def num_tokens(self, ids):
        """How many tokens ``loss`` and ``token_nll`` predict for sentence ``ids``."""
        return len(ids) + (self.eos_id is not None) - (self.bos_id is None)

    # -------------------- per example --------------------

    @dynnet.function
    def token_nll(self, ids):
        """The summed negative log-likelihood of the sentence's predicted tokens."""
        tokens = _token_list(ids)
        inputs = tokens if self.bos_id is None else [self.bos_id] + tokens
        targets = tokens[1:] if self.bos_id is None else tokens
        if self.eos_id is not None:
            targets = targets + [self.eos_id]
        else:
            inputs = inputs[:-1]
        if not targets or not inputs:
            raise ValueError(f"sentence {tokens} has no token to predict (it needs at "
                             "least one token, or two without bos_id and eos_id)")
        device = self.head.out.weight.device
        state = None
        hs = []
        for token in inputs:
            state = self.step(torch.tensor(token, device=device), state)
            hs.append(state[0])
        return self.head(torch.stack(hs), torch.tensor(targets, device=device))

    @dynnet.function
    def loss(self, ids):
        """The mean negative log-likelihood per predicted token of the sentence."""
        count = float(self.num_tokens(_token_list(ids)))  # a tensor: see TreeClassifier.loss
        return self.token_nll(ids) / torch.tensor(count, device=self.head.out.weight.device)

    @dynnet.function
    def generate(self, prefix_ids, max_len=50, greedy=True, temperature=1.0):
        """Continues ``prefix_ids`` one token at a time until ``eos_id`` or ``max_len``
        new tokens.

        Greedy decoding takes the most likely token; otherwise tokens are sampled from
        ``softmax(logits / temperature)``. Returns the new ids (a ``TokenIds`` list),
        ending with ``eos_id`` when decoding stopped there. Batched, the samples of all
        examples are drawn together: a seed gives the same samples for the same batch,
        not those of calls one example at a time.
        """
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        tokens = _token_list(prefix_ids)
        if self.bos_id is not None:
            tokens = [self.bos_id] + tokens
        if not tokens:
            raise ValueError("generate needs a non-empty prefix when the model has no bos_id")
        device = self.head.out.weight.device
        state = None
        for token in tokens:
            state = self.step(torch.tensor(token, device=device), state)
        out = TokenIds()
        for _ in range(max_len):
            logits = self.head(state[0])
            if greedy:
                token = int(torch.argmax(logits))
            else:
                # minus the largest logit first: a tiny temperature gives one-hot, not nan
                scaled = (logits - logits.max()) / temperature
                token = int(torch.multinomial(torch.softmax(scaled, -1), 1))
            out.append(token)
            if token == self.eos_id:
                break
            state = self.step(torch.tensor(token, device=device), state)
        return out

    # -------------------- whole data sets --------------------

    def perplexity(self, sentences, batch_size=64):
        """``exp(total NLL / total predicted tokens)`` over ``sentences`` (evaluation
        mode, no gradients)."""
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for i in range(0, len(sentences), batch_size):
                    chunk = sentences[i:i + batch_size]
                    total += float(self.token_nll.batch(chunk).sum())
                    count += sum(self.num_tokens(s) for s in chunk)
        finally:
            self.train(was_training)
        if count == 0:
            raise ValueError("perplexity of no tokens")
        return math.exp(total / count)


def _token_list(ids):
    """A sentence as a list of Python ints (a tensor's values are read once)."""
    if isinstance(ids, torch.Tensor):
        return ids.tolist()
    return list(ids)
