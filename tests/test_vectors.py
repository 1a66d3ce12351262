"""Tests of dynnet.models.vectors: GloVe / word2vec text files into embeddings."""

import pytest
import torch

from dynnet.errors import DynnetError
from dynnet.models.vectors import VectorsFormatError, load_into_embedding, read_word_vectors
from dynnet.vocab import Vocab

GLOVE = "the 0.1 0.2 -0.3\ncat 1 2 3\n\ncaf\u00e9 4.5 -1e-2 0\nthe 9 9 9\n"
WORD2VEC = "3 2\nthe 0.5 0.25\ndog -1 1\n8\u00a01/2 2 3\n"


def _write(tmp_path, text, name="vectors.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_glove_dict(tmp_path):
    vectors, dim = read_word_vectors(_write(tmp_path, GLOVE))
    assert dim == 3
    assert list(vectors) == ["the", "cat", "caf\u00e9"]
    assert torch.equal(vectors["the"], torch.tensor([0.1, 0.2, -0.3]))  # first one wins
    assert torch.equal(vectors["caf\u00e9"], torch.tensor([4.5, -0.01, 0.0]))
    assert all(v.dtype == torch.float32 and v.shape == (3,) for v in vectors.values())


def test_read_word2vec_header(tmp_path):
    vectors, dim = read_word_vectors(_write(tmp_path, WORD2VEC))
    assert dim == 2
    assert list(vectors) == ["the", "dog", "8\u00a01/2"]
    assert torch.equal(vectors["dog"], torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("text", [GLOVE, WORD2VEC])
def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path, text):
    """Saved with a BOM, a GloVe file's first word was '\ufeffthe' (its vector
    silently unused) and a word2vec header was not recognised."""
    plain = read_word_vectors(_write(tmp_path, text))
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    marked = read_word_vectors(path)
    assert list(marked[0]) == list(plain[0]) and marked[1] == plain[1]


def test_read_with_vocab_gives_matrix(tmp_path):
    vocab = Vocab(["cat", "dog", "the"])
    matrix, dim = read_word_vectors(_write(tmp_path, GLOVE), vocab=vocab)
    assert dim == 3 and matrix.shape == (4, 3) and matrix.dtype == torch.float32
    assert torch.equal(matrix[vocab["cat"]], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(matrix[vocab["the"]], torch.tensor([0.1, 0.2, -0.3]))
    assert torch.equal(matrix[vocab["dog"]], torch.zeros(3))
    assert torch.equal(matrix[vocab.unk_id], torch.zeros(3))


def test_read_with_dict_vocab(tmp_path):
    matrix, _ = read_word_vectors(_write(tmp_path, WORD2VEC), vocab={"dog": 0, "cow": 1})
    assert torch.equal(matrix, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))


def test_load_into_embedding(tmp_path):
    vocab = Vocab(["cat", "dog", "the", "caf\u00e9"])
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(len(vocab) + 2, 3)
    before = embedding.weight.detach().clone()
    found = load_into_embedding(embedding, vocab, _write(tmp_path, GLOVE))
    assert found == 3
    weight = embedding.weight.detach()
    assert torch.equal(weight[vocab["cat"]], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(weight[vocab["caf\u00e9"]], torch.tensor([4.5, -0.01, 0.0]))
    for untouched in (vocab.unk_id, vocab["dog"], len(vocab), len(vocab) + 1):
        assert torch.equal(weight[untouched], before[untouched])
    assert embedding.weight.requires_grad and embedding.weight.grad is None


def test_load_into_embedding_checks_dimension_and_size(tmp_path):
    path = _write(tmp_path, GLOVE)
    vocab = Vocab(["cat"])
    with pytest.raises(VectorsFormatError, match="3-dimensional vectors but the embedding "
                                                 "has dimension 4"):
        load_into_embedding(torch.nn.Embedding(2, 4), vocab, path)
    with pytest.raises(VectorsFormatError, match="2 tokens but the embedding only 1 rows"):
        load_into_embedding(torch.nn.Embedding(1, 3), vocab, path)


def test_load_into_embedding_none_found(tmp_path):
    embedding = torch.nn.Embedding(2, 3)
    before = embedding.weight.detach().clone()
    assert load_into_embedding(embedding, Vocab(["zebra"]), _write(tmp_path, GLOVE)) == 0
    assert torch.equal(embedding.weight.detach(), before)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a 1 2\nb 1 2 3\n", 2, "expected a word and 2 values, found 3 values"),
        ("a 1 2\nb 1\n", 2, "expected a word and 2 values, found 1 values"),
        ("a 1 2\n\nb 1 x\n", 3, "non-numeric value 'x' in the vector of 'b'"),
        ("2 2\na 1 2\nb 1 2 3\n", 3, "expected a word and 2 values, found 3 values"),
        ("lonely\n", 1, "expected a word and its values"),
        ("3 0\n", 1, "dimension 0"),
        ("a 1 2\n\xff\xfe 1 2\n", 2, "invalid UTF-8"),
    ],
)
def test_malformed_lines_name_path_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(VectorsFormatError) as info:
        read_word_vectors(path)
    err = info.value
    assert (err.path, err.line) == (str(path), line)
    assert str(err).startswith(f"{path}:{line}: ") and message in str(err)
    assert isinstance(err, DynnetError) and isinstance(err, ValueError)


def test_non_numeric_checked_for_vocab_words(tmp_path):
    path = _write(tmp_path, "a 1 2\nb 1 nan\nc 1 oops\n")
    matrix, _ = read_word_vectors(path, vocab={"a": 0, "b": 1})  # c's line is not parsed
    assert torch.isnan(matrix[1, 1])
    with pytest.raises(VectorsFormatError, match=r":3: non-numeric value 'oops'"):
        read_word_vectors(path, vocab={"c": 0})


def test_file_level_errors(tmp_path):
    with pytest.raises(VectorsFormatError, match="no vectors"):
        read_word_vectors(_write(tmp_path, "\n\n"))
    with pytest.raises(VectorsFormatError, match="announces 5 vectors but the file has 3"):
        read_word_vectors(_write(tmp_path, WORD2VEC.replace("3 2", "5 2")))
    with pytest.raises(FileNotFoundError):
        read_word_vectors(tmp_path / "absent.txt")


def test_header_only_file(tmp_path):
    vectors, dim = read_word_vectors(_write(tmp_path, "0 7\n"))
    assert (vectors, dim) == ({}, 7)
    matrix, dim = read_word_vectors(_write(tmp_path, "0 7\n"), vocab=Vocab([]))
    assert matrix.shape == (1, 7)
