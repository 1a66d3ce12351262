"""Saving and loading the prebuilt models: identical outputs, clear refusals."""

import json

import pytest
import torch

import dynnet.models
from dynnet.models import (
    MODEL_REGISTRY,
    ChildSumTreeLSTM,
    ModelLoadError,
    NaryTreeLSTM,
    RecursiveNN,
    SequencePredictor,
)
from tests.strategies import VOCAB, random_trees

TREE_MODELS = [
    (NaryTreeLSTM, {"node_loss": True, "dropout": 0.2, "num_classes": 5}),
    (ChildSumTreeLSTM, {"embed_dim": 6, "hidden_dim": 7}),
    (RecursiveNN, {"num_classes": 5, "arity": 3}),
]


def test_registry_names():
    assert MODEL_REGISTRY["tree-lstm"] is NaryTreeLSTM
    assert MODEL_REGISTRY["child-sum-tree-lstm"] is ChildSumTreeLSTM
    assert MODEL_REGISTRY["recursive-nn"] is RecursiveNN
    assert MODEL_REGISTRY["lm"] is SequencePredictor


@pytest.mark.parametrize("cls,kwargs", TREE_MODELS)
def test_tree_model_round_trip(tmp_path, cls, kwargs):
    model = cls(VOCAB, **{"embed_dim": 8, "hidden_dim": 10, **kwargs}).eval()
    trees = random_trees(6, seed=1, nary=cls is not NaryTreeLSTM)  # nary: up to 3 children
    model.save(tmp_path / "ckpt")
    loaded = dynnet.models.load(tmp_path / "ckpt").eval()
    assert type(loaded) is cls and loaded.config() == model.config()
    assert cls.load(tmp_path / "ckpt").config() == model.config()
    for name in ("predict", "loss"):
        want = getattr(model, name).batch(trees)
        got = getattr(loaded, name).batch(trees)
        assert torch.equal(got, want)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_language_model_round_trip(tmp_path):
    model = SequencePredictor(VOCAB, 8, 10, cell="gru", eos_id=2, bos_id=1).eval()
    model.save(tmp_path / "lm")
    loaded = SequencePredictor.load(tmp_path / "lm").eval()
    sents = [[3, 4, 5], [6], [7, 8]]
    assert torch.equal(loaded.token_nll.batch(sents), model.token_nll.batch(sents))
    assert loaded.generate.batch(sents, max_len=5) == model.generate.batch(sents, max_len=5)
    assert loaded.eos_id == 2 and loaded.bos_id == 1 and loaded.cell_type == "gru"


def test_saved_files_are_config_and_safetensors(tmp_path):
    NaryTreeLSTM(VOCAB, embed_dim=4, hidden_dim=4).save(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json",
                                                                  "weights.safetensors"]
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["model"] == "tree-lstm"
    assert config["config"]["vocab_size"] == VOCAB


def test_load_rejects_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        dynnet.models.load(tmp_path / "nothing")


def test_load_rejects_missing_weights(tmp_path):
    NaryTreeLSTM(VOCAB, embed_dim=4, hidden_dim=4).save(tmp_path / "c")
    (tmp_path / "c" / "weights.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weights.safetensors"):
        dynnet.models.load(tmp_path / "c")


def test_load_rejects_config_that_does_not_fit_the_weights(tmp_path):
    NaryTreeLSTM(VOCAB, embed_dim=4, hidden_dim=4).save(tmp_path / "c")
    path = tmp_path / "c" / "config.json"
    config = json.loads(path.read_text())
    config["config"]["hidden_dim"] = 5
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="shape mismatch"):
        dynnet.models.load(tmp_path / "c")
    config["config"]["hidden_dim"] = 4
    config["config"]["cell"] = "lstm"  # not a tree-LSTM argument
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="cannot build tree-lstm"):
        dynnet.models.load(tmp_path / "c")


def test_load_rejects_bad_json_and_unknown_model(tmp_path):
    RecursiveNN(VOCAB, embed_dim=4, hidden_dim=4).save(tmp_path / "c")
    path = tmp_path / "c" / "config.json"
    text = path.read_text()
    path.write_text(text.replace("recursive-nn", "no-such-model"))
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'.*tree-lstm"):
        dynnet.models.load(tmp_path / "c")
    path.write_text("{ not json")
    with pytest.raises(ModelLoadError, match="invalid JSON"):
        dynnet.models.load(tmp_path / "c")


def test_class_load_rejects_another_model(tmp_path):
    SequencePredictor(VOCAB, 4, 4).save(tmp_path / "lm")
    with pytest.raises(ModelLoadError, match="not a NaryTreeLSTM"):
        NaryTreeLSTM.load(tmp_path / "lm")


@pytest.mark.parametrize("cls, kwargs", [
    (NaryTreeLSTM, {}), (NaryTreeLSTM, {"node_loss": True}), (ChildSumTreeLSTM, {}),
    (RecursiveNN, {}), (SequencePredictor, {"cell": "gru", "bos_id": 1, "eos_id": 2})])
def test_shipped_models_stay_on_the_fast_path(cls, kwargs):
    """No segment of a shipped model runs op by op (dynnet.profile().fallbacks)."""
    import dynnet
    from tests.strategies import VOCAB, random_trees

    if cls is SequencePredictor:
        model = cls(VOCAB, 8, 8, **kwargs)
        data = [[3 + (k * j) % (VOCAB - 3) for j in range(1 + k % 6)] for k in range(12)]
    else:
        model = cls(VOCAB, embed_dim=8, hidden_dim=8, **kwargs)
        data = random_trees(12, max_depth=5)
    model.loss.batch(data).mean().backward()
    with dynnet.profile() as prof:
        model.loss.batch(data).mean().backward()
    assert prof.fallbacks == []
