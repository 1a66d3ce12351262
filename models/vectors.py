"""Pretrained word vectors (GloVe and word2vec text formats) for embeddings.

Both formats have one word per line followed by its values, separated by spaces; a
word2vec file starts with a header line ``"<count> <dim>"``, which is detected. Words
are kept as written (a no-break space inside a word stays there); binary word2vec
files are not supported.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from dynnet.errors import DynnetError

__all__ = ["VectorsFormatError", "load_into_embedding", "read_word_vectors"]

_split = re.compile(rb"[^ \t\r\n\f\v]+").findall


class VectorsFormatError(DynnetError, ValueError):
    """A malformed word-vector file, or vectors that do not fit an embedding.

    Attributes:
        path: the file.
        line: the 1-based line at fault, or None when the problem is not one line.
    """

    def __init__(self, path, line, message):
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


def read_word_vectors(path, vocab=None):
    """Reads a GloVe or word2vec text file.

    Args:
        path: the file (UTF-8).
        vocab: optional token -> id mapping (a ``dynnet.vocab.Vocab`` or a dict); when
            given only the vectors of its words are kept, as rows of a matrix, and only
            those lines have their values parsed.

    Returns:
        ``(vectors, dim)``: without ``vocab``, ``vectors`` is a dict word -> float32
        tensor ``[dim]`` (the first occurrence of a repeated word wins); with
        ``vocab``, a float32 tensor ``[len(vocab), dim]`` whose rows of words absent
        from the file are zero.

    Raises:
        VectorsFormatError: a line with the wrong number of values or a non-numeric
            value, invalid UTF-8, a header that disagrees with the file, or an empty
            file; the message names the path and line.
    """
    vectors, dim, _ = _read(path, vocab)
    return vectors, dim


def load_into_embedding(embedding, vocab, path):
    """Copies the pretrained vectors of ``vocab``'s words into ``embedding``.

    Rows of words absent from the file keep their current values.

    Args:
        embedding: a ``torch.nn.Embedding`` with a row per vocabulary id.
        vocab: token -> id mapping (``dynnet.vocab.Vocab`` or dict).
        path: GloVe or word2vec text file.

    Returns:
        The number of vocabulary words that had a vector.

    Raises:
        VectorsFormatError: malformed file (see ``read_word_vectors``), vectors whose
            dimension differs from ``embedding_dim``, or a vocabulary larger than the
            embedding.
    """
    if len(vocab) > embedding.num_embeddings:
        raise VectorsFormatError(path, None, f"the vocabulary has {len(vocab)} tokens but "
                                 f"the embedding only {embedding.num_embeddings} rows")
    matrix, dim, found = _read(path, vocab)
    if dim != embedding.embedding_dim:
        raise VectorsFormatError(path, None, f"the file has {dim}-dimensional vectors but "
                                 f"the embedding has dimension {embedding.embedding_dim}")
    if found:
        ids = torch.tensor(sorted(found), dtype=torch.long)
        weight = embedding.weight
        with torch.no_grad():
            weight[ids.to(weight.device)] = matrix[ids].to(weight.device, weight.dtype)
    return len(found)


def _read(path, vocab):
    """Returns (dict or matrix, dim, set of vocab ids found)."""
    vectors, found = {}, set()
    matrix = dim = expected_count = None
    count = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark is not part of the first word
            fields = _split(raw)
            if not fields:
                continue
            if dim is None:
                # A first line of two integers is a word2vec header "<count> <dim>".
                if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                    expected_count, dim = int(fields[0]), int(fields[1])
                    if dim < 1:
                        raise VectorsFormatError(path, lineno, "the header gives dimension 0")
                    continue
                if len(fields) < 2:
                    raise VectorsFormatError(path, lineno, "expected a word and its values")
                dim = len(fields) - 1
            if matrix is None and vocab is not None:
                matrix = torch.zeros(len(vocab), dim)
            if len(fields) != dim + 1:
                raise VectorsFormatError(path, lineno, f"expected a word and {dim} values, "
                                         f"found {len(fields) - 1} values")
            count += 1
            word = _decode(path, lineno, fields[0])
            if vocab is None:
                if word not in vectors:
                    vectors[word] = torch.from_numpy(_values(path, lineno, word, fields))
            elif word in vocab:
                index = vocab[word]
                if index not in found:
                    found.add(index)
                    matrix[index] = torch.from_numpy(_values(path, lineno, word, fields))
    if dim is None:
        raise VectorsFormatError(path, None, "no vectors in the file")
    if expected_count is not None and count != expected_count:
        raise VectorsFormatError(path, None, f"the header announces {expected_count} "
                                 f"vectors but the file has {count}")
    if vocab is None:
        return vectors, dim, found
    if matrix is None:
        matrix = torch.zeros(len(vocab), dim)
    return matrix, dim, found


def _decode(path, lineno, raw_word):
    try:
        return raw_word.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VectorsFormatError(path, lineno, f"invalid UTF-8 in the word ({e.reason}); "
                                 "binary word2vec files are not supported") from None


def _values(path, lineno, word, fields):
    try:
        return np.array(fields[1:], dtype=np.float32)
    except ValueError:
        bad = next(x for x in fields[1:] if not _is_float(x)).decode(errors="replace")
        raise VectorsFormatError(path, lineno, f"non-numeric value {bad!r} in the vector "
                                 f"of {word!r}") from None


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True
