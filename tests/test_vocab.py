"""Tests of dynnet.vocab."""

import json
import os

import pytest

from dynnet.data import Tree
from dynnet.errors import DynnetError
from dynnet.vocab import Vocab, VocabFormatError, atomic_write_text

SENTENCES = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat"], ["the"]]


def test_ids_unk_then_specials_then_tokens():
    vocab = Vocab(["a", "b", "a", "<pad>"], specials=["<pad>", "<s>"])
    assert vocab.tokens == ["<unk>", "<pad>", "<s>", "a", "b"]
    assert len(vocab) == 5 and list(vocab) == vocab.tokens
    assert vocab.unk_id == 0
    assert [vocab[t] for t in ["a", "b", "<s>", "zebra"]] == [3, 4, 2, 0]
    assert "a" in vocab and "zebra" not in vocab
    assert vocab.lookup(4) == "b"
    with pytest.raises(IndexError):
        vocab.lookup(5)
    with pytest.raises(IndexError):
        vocab.lookup(-1)


def test_no_unk_raises_key_error():
    vocab = Vocab(["x", "y"], unk=None)
    assert vocab.unk_id is None and vocab["y"] == 1
    with pytest.raises(KeyError, match="'z'"):
        vocab["z"]


def test_build_orders_by_frequency_then_alphabet():
    vocab = Vocab.build(SENTENCES)
    assert vocab.tokens == ["<unk>", "the", "cat", "sat", "a", "dog"]


def test_build_min_freq_max_size_specials():
    vocab = Vocab.build(SENTENCES, min_freq=2, specials=["<pad>"])
    assert vocab.tokens == ["<unk>", "<pad>", "the", "cat", "sat"]
    assert vocab["dog"] == vocab.unk_id
    vocab = Vocab.build(SENTENCES, max_size=3)
    assert vocab.tokens == ["<unk>", "the", "cat"]
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(SENTENCES, max_size=1, specials=["<pad>"])


def test_build_does_not_count_reserved_tokens_twice():
    vocab = Vocab.build([["<unk>", "x", "<unk>"]], specials=["<s>"])
    assert vocab.tokens == ["<unk>", "<s>", "x"]


def test_from_trees_and_index_trees():
    trees = [Tree.parse("(1 (2 good) (3 film))"), Tree.parse("(0 (1 bad) (2 film))")]
    vocab = Vocab.from_trees(trees, min_freq=1)
    assert vocab.tokens == ["<unk>", "film", "bad", "good"]
    assert vocab.index_trees(trees) is trees
    assert [[n.word_id for n in t.nodes()] for t in trees] == [[3, 1, None], [2, 1, None]]
    Vocab(["x"]).index_trees(trees)
    assert trees[0].children[0].word_id == 0


def test_encode_decode():
    vocab = Vocab.build(SENTENCES)
    ids = vocab.encode(["the", "cat", "unknown"])
    assert ids == [1, 2, 0]
    assert vocab.decode(ids) == ["the", "cat", "<unk>"]


def test_save_load_roundtrip(tmp_path):
    vocab = Vocab.build(SENTENCES + [["caf\u00e9", "\u732b"]], specials=["<pad>"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.tokens == vocab.tokens
    assert loaded.specials == ("<pad>",) and loaded.unk == "<unk>"
    assert loaded["\u732b"] == vocab["\u732b"]
    assert os.listdir(tmp_path) == ["vocab.json"]  # no temporary file left
    no_unk = Vocab(["a"], unk=None)
    no_unk.save(path)
    assert Vocab.load(path) == no_unk and Vocab.load(path) != vocab


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    Vocab(["old"]).save(path)
    before = path.read_text(encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        Vocab(["new"]).save(path)
    assert path.read_text(encoding="utf-8") == before
    assert os.listdir(tmp_path) == ["vocab.json"]


def test_atomic_write_text_permissions_follow_umask(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_load_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text('{\n  "format": 1,\n  "tokens": [a]\n}\n', encoding="utf-8")
    with pytest.raises(VocabFormatError) as info:
        Vocab.load(path)
    assert str(info.value).startswith(f"{path}:3:14: invalid JSON")
    assert isinstance(info.value, DynnetError)


def test_load_non_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b'{"format": 1,\n "tokens": ["caf\xe9"]}\n')  # Latin-1
    with pytest.raises(VocabFormatError) as info:
        Vocab.load(path)
    assert str(info.value) == (f"{path}:2:17: not UTF-8 text (byte 0xe9 at byte offset "
                               "30)")

@pytest.mark.parametrize(
    "data, message",
    [
        ([], "not a dynnet vocabulary"),
        ({"format": 2, "tokens": []}, "not a dynnet vocabulary"),
        ({"format": 1, "tokens": [1]}, "list of strings"),
        ({"format": 1, "tokens": ["a", "a"]}, "duplicates"),
        ({"format": 1, "unk": 3, "tokens": ["a"]}, "'unk' must be"),
        ({"format": 1, "unk": "<unk>", "specials": [], "tokens": ["a", "<unk>"]},
         "must come first"),
    ],
)
def test_load_rejects_bad_content(tmp_path, data, message):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VocabFormatError, match=message):
        Vocab.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Vocab.load(tmp_path / "absent.json")
