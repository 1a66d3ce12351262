"""Tests of dynnet.data: tree parsing and printing, data set readers, batching."""

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynnet.data import (
    BucketBatchSampler,
    Tree,
    TreeParseError,
    binary_label,
    collate_list,
    data_root,
    fine_label,
    ptb_split,
    read_sentences,
    read_trees,
    sst_split,
)
from dynnet.errors import DynnetError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "sst").is_dir(), reason="shared data absent")


# --- Tree basics -------------------------------------------------------------------


def test_parse_leaf_and_inner_nodes():
    tree = Tree.parse("(3 (2 The) (4 (3 good) (2 film)))")
    assert tree.label == 3 and not tree.is_leaf and tree.word is None
    assert [c.label for c in tree.children] == [2, 4]
    leaf = tree.children[0]
    assert leaf.is_leaf and leaf.word == "The" and leaf.children == []
    assert tree.leaves() == ["The", "good", "film"]
    assert tree.size() == 5
    assert tree.height() == 3
    assert leaf.height() == 1 and leaf.size() == 1


def test_nodes_are_post_order():
    tree = Tree.parse("(a (b x) (c (d y) (e z)))")
    assert [n.label for n in tree.nodes()] == ["b", "d", "e", "c", "a"]
    seen = set()
    for node in tree.nodes():
        assert all(id(c) in seen for c in node.children)
        seen.add(id(node))


def test_labels_int_or_str():
    tree = Tree.parse("(NP (-1 x) (0 y) (2a z) (007 w))")
    assert tree.label == "NP"
    assert [c.label for c in tree.children] == [-1, 0, "2a", 7]
    assert isinstance(tree.children[1].label, int)


def test_words_kept_verbatim():
    text = "(2 (2 -LRB-) (2 (2 1\\/2) (2 -RRB-)) (2 8\xa01\\/2) (2 ``) (2 ''))"
    tree = Tree.parse(text)
    assert tree.leaves() == ["-LRB-", r"1\/2", "-RRB-", "8\xa01\\/2", "``", "''"]
    assert tree.to_string() == text


def test_whitespace_tolerant():
    tree = Tree.parse("  \n( 3\n\t( 2  a )\r\n (1 b\n)\n)  \n")
    assert tree.to_string() == "(3 (2 a) (1 b))"


def test_empty_root_label_as_in_wsj():
    tree = Tree.parse("( (S (NP (DT the)) (VP (VBZ runs))))")
    assert tree.label == "" and tree.children[0].label == "S"
    assert tree.to_string() == "( (S (NP (DT the)) (VP (VBZ runs))))"


def test_to_string_roundtrip_and_repr():
    text = "(1 (0 a) (2 (3 b) (4 c)))"
    tree = Tree.parse(text)
    assert tree.to_string() == text and str(tree) == text
    assert repr(tree) == "Tree(1, size=5, leaves=3)"
    assert repr(tree.children[0]) == "Tree(0, word='a')"


def test_to_string_rejects_unwritable():
    with pytest.raises(ValueError, match="cannot be written"):
        Tree(1, word="two words").to_string()
    with pytest.raises(ValueError, match="cannot be written"):
        Tree("a b", [Tree(1, word="x")]).to_string()
    with pytest.raises(ValueError, match="cannot be written"):
        Tree(1).to_string()


def test_constructor_rejects_children_and_word():
    with pytest.raises(ValueError):
        Tree(1, [Tree(2, word="a")], word="b")


def test_equality_is_identity_and_equals_is_structural():
    a, b = Tree.parse("(1 (2 a) (3 b))"), Tree.parse("(1 (2 a) (3 b))")
    assert a != b and len({a, b}) == 2
    assert a.equals(b)
    assert not a.equals(Tree.parse("(1 (2 a) (3 c))"))
    assert not a.equals(Tree.parse("(1 (2 a) (3 (3 b)))"))
    assert not a.equals("(1 (2 a) (3 b))")


def test_deep_chain_without_recursion():
    depth = 5000
    text = "(1 " * depth + "(0 w)" + ")" * depth
    tree = Tree.parse(text)
    assert tree.height() == depth + 1
    assert tree.size() == depth + 1
    assert tree.leaves() == ["w"]
    assert sum(1 for _ in tree.nodes()) == depth + 1
    assert tree.to_string() == text
    assert tree.equals(Tree.parse(tree.to_string()))
    assert depth > sys.getrecursionlimit()


def test_deep_tree_deallocates():
    depth = 100_000
    tree = Tree.parse("(1 " * depth + "(0 w)" + ")" * depth)
    assert tree.height() == depth + 1
    del tree


# --- Parse errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, column, expected",
    [
        ("", 1, 1, "'('"),
        ("word", 1, 1, "'('"),
        ("(", 1, 2, "')'"),
        ("(2 a b)", 1, 6, "'(' or ')'"),
        ("(2 (1 a) b)", 1, 10, "'(' or ')'"),
        ("(2 a (1 b))", 1, 6, "')' after the word"),
        ("(2 a))", 1, 6, "end of tree"),
        ("(2 a) (3 b)", 1, 7, "end of tree"),
        ("()", 1, 2, "a word or '('"),
        ("(3 (2 a)\n   (2 b)\n   (2 c d))", 3, 9, "'(' or ')'"),
        ("(3\n  (1 a)\n  ", 3, 3, "')'"),
        (")", 1, 1, "'('"),
    ],
)
def test_parse_errors_name_line_and_column(text, line, column, expected):
    with pytest.raises(TreeParseError) as info:
        Tree.parse(text)
    err = info.value
    assert (err.line, err.column, err.path, err.expected) == (line, column, None, expected)
    assert str(err).startswith(f"line {line}, column {column}: expected {expected}, found ")
    assert isinstance(err, ValueError) and isinstance(err, DynnetError)


def test_parse_error_found_token():
    with pytest.raises(TreeParseError, match=r"found 'b'$"):
        Tree.parse("(2 a b)")
    with pytest.raises(TreeParseError, match="found end of input$"):
        Tree.parse("(2 (1 a)")


def test_read_trees_error_names_path_line_column(tmp_path):
    path = tmp_path / "trees.txt"
    path.write_text("(1 (2 a) (3 b))\n\n(2 x)\n  (4 (1 a) (2 b c))\n", encoding="utf-8")
    with pytest.raises(TreeParseError) as info:
        read_trees(path)
    err = info.value
    assert (err.path, err.line, err.column) == (str(path), 4, 17)
    assert str(err) == f"{path}:4:17: expected '(' or ')', found 'c'"


def test_read_trees_one_per_nonempty_line(tmp_path):
    path = tmp_path / "trees.txt"
    lines = ["(1 (2 a) (3 b))", "", "   ", "(2 x)\r", "(0 (1 \u00e9t\u00e9) (2 y))"]
    path.write_text("\n".join(lines), encoding="utf-8")
    trees = read_trees(path)
    assert [t.to_string() for t in trees] == [lines[0], "(2 x)", lines[4]]


def test_read_trees_not_utf8_names_path_line_column(tmp_path):
    path = tmp_path / "trees.txt"
    path.write_bytes(b"(1 (2 a) (3 b))\n\n(2 (2 caf\xe9) (2 x))\n")  # Latin-1
    with pytest.raises(TreeParseError) as info:
        read_trees(path)
    assert (info.value.path, info.value.line, info.value.column) == (str(path), 3, 10)
    assert str(info.value) == f"{path}:3:10: expected UTF-8 text, found byte 0xe9"


def test_readers_skip_a_byte_order_mark(tmp_path):
    path = tmp_path / "trees.txt"
    path.write_bytes(b"\xef\xbb\xbf(1 (2 a) (3 b))\n")
    assert [t.label for t in read_trees(path)] == [1]
    path.write_bytes(b"\xef\xbb\xbfthe cat\n")
    assert read_sentences(path) == [["the", "cat"]]

def test_read_trees_rejects_tree_split_over_lines(tmp_path):
    path = tmp_path / "trees.txt"
    path.write_text("(1 (2 a)\n(3 b))\n", encoding="utf-8")
    with pytest.raises(TreeParseError) as info:
        read_trees(path)
    assert (info.value.line, info.value.column) == (1, 9)


# --- Random trees round-trip -------------------------------------------------------

_token_chars = st.characters(
    blacklist_characters="() \t\n\r\f\v", blacklist_categories=("Cs",)
)
_words = st.text(_token_chars, min_size=1, max_size=6)
_str_labels = st.text(_token_chars, min_size=1, max_size=4).filter(
    lambda s: not s.lstrip("-").isascii() or not s.lstrip("-").isdigit()
)
_labels = st.one_of(st.integers(-5, 1000), _str_labels)
_trees = st.recursive(
    st.builds(lambda label, word: Tree(label, word=word), _labels, _words),
    lambda kids: st.builds(
        lambda label, children: Tree(label, children),
        st.one_of(_labels, st.just("")),
        st.lists(kids, min_size=1, max_size=4),
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(_trees, st.sampled_from([" ", "\n", "  \t"]))
def test_random_trees_roundtrip(tree, sep):
    text = tree.to_string()
    parsed = Tree.parse(text)
    assert parsed.equals(tree)
    assert parsed.to_string() == text
    assert Tree.parse(text.replace(" ", sep)).equals(tree)
    assert parsed.leaves() == tree.leaves()
    assert parsed.size() == tree.size() == sum(1 for _ in tree.nodes())


@settings(max_examples=100, deadline=None)
@given(st.lists(_trees, min_size=1, max_size=5))
def test_random_trees_file_roundtrip(tmp_path_factory, trees):
    path = tmp_path_factory.mktemp("rt") / "t.txt"
    path.write_text("\n".join(t.to_string() for t in trees) + "\n", encoding="utf-8")
    read = read_trees(path)
    assert len(read) == len(trees)
    assert all(a.equals(b) for a, b in zip(read, trees))


# --- Sentences and labels ----------------------------------------------------------


def test_read_sentences(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text(" the cat <unk> \n\n  \na\xa0b  c\n", encoding="utf-8")
    assert read_sentences(path) == [["the", "cat", "<unk>"], ["a\xa0b", "c"]]


def test_read_sentences_not_utf8_names_path_line_column(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"the cat\r\nno \xff here\n")
    with pytest.raises(DynnetError) as info:
        read_sentences(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"{path}:2:4: not UTF-8 text (byte 0xff at byte offset 12)"

def test_binary_and_fine_labels():
    assert [binary_label(x) for x in range(5)] == [0, 0, None, 1, 1]
    assert [fine_label(x) for x in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        binary_label(5)


# --- Shared data sets --------------------------------------------------------------


def test_data_root_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pass root= or set DYNNET_DATA"):
        data_root(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        sst_split("train", root=tmp_path)
    with pytest.raises(ValueError, match="unknown sst split"):
        sst_split("valid", root=tmp_path)


def test_data_root_env(tmp_path, monkeypatch):
    (tmp_path / "sst").mkdir()
    (tmp_path / "sst" / "dev.txt").write_text("(1 (2 a) (3 b))\n", encoding="utf-8")
    monkeypatch.setenv("DYNNET_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert [t.to_string() for t in sst_split("dev")] == ["(1 (2 a) (3 b))"]


@needs_data
def test_sst_splits():
    counts = {name: len(sst_split(name, root=DATA)) for name in ("train", "dev", "test")}
    assert counts == {"train": 8544, "dev": 1101, "test": 2210}


@needs_data
def test_sst_dev_roundtrips_and_labels():
    path = DATA / "sst" / "dev.txt"
    trees = read_trees(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [t.to_string() for t in trees] == lines
    for tree in trees:
        for node in tree.nodes():
            assert node.label in range(5)
            assert len(node.children) in (0, 2)


@needs_data
def test_ptb_splits():
    valid = ptb_split("valid", root=DATA)
    assert len(valid) == 3370
    assert valid[0][:3] == ["consumers", "may", "want"]


# --- Batching ----------------------------------------------------------------------


def _lengths(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 60, (n,), generator=g).tolist()


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_bucket_sampler_covers_every_index_once(shuffle, drop_last):
    lengths = _lengths(1003)
    sampler = BucketBatchSampler(lengths, 16, shuffle=shuffle, drop_last=drop_last,
                                 bucket_batches=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (1003 // 16 if drop_last else 63)
    flat = [i for b in batches for i in b]
    if drop_last:
        assert len(flat) == 1003 // 16 * 16 and len(set(flat)) == len(flat)
        assert all(len(b) == 16 for b in batches)
    else:
        assert sorted(flat) == list(range(1003))
        assert sorted(len(b) for b in batches)[0] == 1003 % 16


def test_bucket_sampler_drops_other_examples_each_shuffled_epoch():
    """With drop_last, the examples left out are not always the same (the longest of
    the last chunk, as they once were): over epochs, every example is seen."""
    sampler = BucketBatchSampler(list(range(100)), 8, shuffle=True, seed=0, drop_last=True)
    seen = set()
    for _ in range(50):
        batches = list(sampler)
        assert all(len(b) == 8 for b in batches) and len(batches) == 12
        seen.update(i for b in batches for i in b)
    assert seen == set(range(100))


def test_bucket_sampler_groups_similar_lengths():
    lengths = _lengths(640)
    sampler = BucketBatchSampler(lengths, 32, shuffle=True, seed=3, bucket_batches=100)
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in sampler]
    assert max(spans) <= 10  # one chunk, globally sorted: batches are narrow
    sampler = BucketBatchSampler(lengths, 32, shuffle=False, bucket_batches=100)
    flat = [lengths[i] for b in sampler for i in b]
    assert flat == sorted(lengths)


def test_bucket_sampler_deterministic_per_seed_and_epoch():
    lengths = _lengths(500)
    a = BucketBatchSampler(lengths, 8, seed=7, bucket_batches=4)
    b = BucketBatchSampler(lengths, 8, seed=7, bucket_batches=4)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    second = list(a)
    assert second != first_a  # the epoch advanced
    a.set_epoch(0)
    assert list(a) == first_a
    c = BucketBatchSampler(lengths, 8, seed=8, bucket_batches=4)
    assert list(c) != first_a


def test_bucket_sampler_with_dataloader():
    data = [Tree.parse(f"(1 (2 w{i}) (3 v{i}))") for i in range(10)]
    sampler = BucketBatchSampler([t.size() for t in data], 4, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate_list)
    batches = list(loader)
    assert [len(b) for b in sorted(batches, key=len)] == [2, 4, 4]
    assert all(isinstance(t, Tree) for b in batches for t in b)
    assert sorted(id(t) for b in batches for t in b) == sorted(id(t) for t in data)


def test_bucket_sampler_validates():
    with pytest.raises(ValueError):
        BucketBatchSampler([1, 2], 0)
    assert list(BucketBatchSampler([], 4)) == []
    assert len(BucketBatchSampler([], 4)) == 0
