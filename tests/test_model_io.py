"""Tests of dynnet.models.io: checkpoint directories with config.json + safetensors."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from dynnet.errors import DynnetError
from dynnet.models.io import (
    CONFIG_FILE,
    MODEL_REGISTRY,
    WEIGHTS_FILE,
    ModelLoadError,
    ModelSaveError,
    SaveLoadMixin,
    load_model,
    register_model,
    save_model,
)


@register_model("test-tiny")
class Tiny(SaveLoadMixin, torch.nn.Module):
    def __init__(self, vocab, dim, tie=False):
        super().__init__()
        self.vocab, self.dim, self.tie = vocab, dim, tie
        self.embed = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)
        if tie:
            self.out.weight = self.embed.weight
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.transposed = torch.nn.Parameter(torch.randn(dim, 3).t())  # not contiguous

    def config(self):
        return {"vocab": self.vocab, "dim": self.dim, "tie": self.tie}

    def forward(self, ids):
        return self.out(self.embed(ids)) + self.transposed.sum()


class Unregistered(Tiny):
    def forward(self, ids):  # computes something else: cannot load as a Tiny
        return super().forward(ids) * 2


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = Tiny(7, 4)
    model.steps += 5
    model.save(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text(encoding="utf-8"))
    assert config == {"model": "test-tiny", "config": {"vocab": 7, "dim": 4, "tie": False},
                      "format": 1}
    loaded = load_model(tmp_path / "ckpt")
    assert type(loaded) is Tiny and _same_weights(model, loaded)
    assert loaded.steps.item() == 5
    ids = torch.tensor([1, 2, 6])
    assert torch.equal(model(ids), loaded(ids))
    assert isinstance(Tiny.load(tmp_path / "ckpt"), Tiny)
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary directories left


def test_tied_weights_roundtrip(tmp_path):
    model = Tiny(5, 3, tie=True)
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.out.weight is loaded.embed.weight
    assert _same_weights(model, loaded)


def test_load_keeps_the_saved_dtypes(tmp_path):
    torch.manual_seed(0)
    model = Tiny(7, 4, tie=True).double()
    model.out.bias.data = model.out.bias.data.to(torch.bfloat16)
    model.save(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.embed.weight.dtype == torch.float64 and loaded.out.bias.dtype == torch.bfloat16
    assert loaded.steps.dtype == torch.long
    assert loaded.out.weight is loaded.embed.weight  # still tied
    assert _same_weights(model, loaded)
    model.out.bias.data = model.out.bias.data.double()
    loaded.out.bias.data = loaded.out.bias.data.double()
    ids = torch.tensor([1, 2, 3])
    assert torch.equal(model(ids), loaded(ids))

def test_weights_file_is_plain_safetensors(tmp_path):
    model = Tiny(4, 2)
    model.save(tmp_path / "c")
    tensors = load_file(str(tmp_path / "c" / WEIGHTS_FILE))
    assert set(tensors) == set(model.state_dict())
    assert torch.equal(tensors["transposed"], model.transposed.detach())


def test_replaces_existing_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    Tiny(4, 2).save(target)
    newer = Tiny(9, 3)
    newer.save(target)
    loaded = load_model(target)
    assert loaded.vocab == 9 and _same_weights(newer, loaded)
    assert os.listdir(tmp_path) == ["ckpt"]


def test_refuses_to_replace_foreign_directory(tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(ModelSaveError, match=r"refusing to replace .*notes\.txt"):
        Tiny(4, 2).save(target)
    assert (target / "notes.txt").read_text(encoding="utf-8") == "precious"
    file_target = tmp_path / "file"
    file_target.write_text("x", encoding="utf-8")
    with pytest.raises(ModelSaveError, match="not a directory"):
        Tiny(4, 2).save(file_target)


def test_empty_existing_directory_is_replaced(tmp_path):
    (tmp_path / "ckpt").mkdir()
    Tiny(4, 2).save(tmp_path / "ckpt")
    assert load_model(tmp_path / "ckpt").vocab == 4


def test_interrupted_save_keeps_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    old = Tiny(4, 2)
    old.save(target)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dynnet.models.io.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        Tiny(6, 2).save(target)
    monkeypatch.undo()
    assert _same_weights(old, load_model(target))
    assert os.listdir(tmp_path) == ["ckpt"]


def test_failed_rename_restores_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    old = Tiny(4, 2)
    old.save(target)
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # moving the new checkpoint into place
            raise OSError("simulated failure")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated"):
        Tiny(6, 2).save(target)
    monkeypatch.undo()
    assert _same_weights(old, load_model(target))
    assert os.listdir(tmp_path) == ["ckpt"]


def test_missing_directory_mentions_interrupted_swap(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist$"):
        load_model(tmp_path / "absent")
    aside = tmp_path / ".ckpt.old-abc"
    Tiny(4, 2).save(aside)
    with pytest.raises(ModelLoadError, match=r"previous checkpoint is at .*\.ckpt\.old-abc"):
        load_model(tmp_path / "ckpt")


def test_save_errors():
    with pytest.raises(ModelSaveError, match="not a registered model"):
        Unregistered(3, 2).save("unused")

    @register_model("test-bad-config")
    class BadConfig(SaveLoadMixin, torch.nn.Module):
        def config(self):
            return {"f": float("nan")}

    try:
        with pytest.raises(ModelSaveError, match="not JSON-serialisable"):
            BadConfig().save("unused")
    finally:
        del MODEL_REGISTRY["test-bad-config"]

    @register_model("test-no-config")
    class NoConfig(SaveLoadMixin, torch.nn.Module):
        pass

    try:
        with pytest.raises(NotImplementedError, match="must define config"):
            NoConfig().save("unused")
    finally:
        del MODEL_REGISTRY["test-no-config"]


def test_register_conflict():
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-tiny")(Unregistered)
    assert register_model("test-tiny")(Tiny) is Tiny


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    Tiny(5, 3).save(path)
    return path


def _rewrite_config(ckpt, **changes):
    path = ckpt / CONFIG_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_load_missing_files(ckpt):
    (ckpt / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"has no {WEIGHTS_FILE}"):
        load_model(ckpt)
    (ckpt / CONFIG_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"has no {CONFIG_FILE}"):
        load_model(ckpt)


def test_load_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load_model(tmp_path / "f")


def test_load_invalid_json_names_line_and_column(ckpt):
    (ckpt / CONFIG_FILE).write_text('{\n  "model": "test-tiny",\n  "config": {,}\n}',
                                    encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        load_model(ckpt)
    assert str(info.value).startswith(f"{ckpt / CONFIG_FILE}:3:14: invalid JSON")
    assert isinstance(info.value, DynnetError)


def test_load_config_not_utf8_names_line_and_column(ckpt):
    (ckpt / CONFIG_FILE).write_bytes(b'{\n  "model": "t\xe9st"}')
    with pytest.raises(ModelLoadError) as info:
        load_model(ckpt)
    assert str(info.value) == (f"{ckpt / CONFIG_FILE}:2:14: not UTF-8 text (byte 0xe9 at "
                               "byte offset 15)")

def test_load_config_that_cannot_be_read_is_a_load_error(ckpt):
    (ckpt / CONFIG_FILE).unlink()
    (ckpt / CONFIG_FILE).mkdir()  # a folder where the file should be: an OSError
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load_model(ckpt)


def test_load_unknown_model_lists_known(ckpt):
    _rewrite_config(ckpt, model="nope")
    with pytest.raises(ModelLoadError, match=r"unknown model 'nope'.*test-tiny"):
        load_model(ckpt)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": 2}, "unsupported checkpoint format 2"),
        ({"model": 3}, "'model' must be"),
        ({"config": [1]}, "'config' must be"),
        ({"config": {"vocab": 5}}, "cannot build test-tiny from its config: TypeError"),
    ],
)
def test_load_bad_config(ckpt, changes, message):
    _rewrite_config(ckpt, **changes)
    with pytest.raises(ModelLoadError, match=message):
        load_model(ckpt)


def test_load_shape_mismatch_names_parameter(ckpt):
    _rewrite_config(ckpt, config={"vocab": 6, "dim": 3, "tie": False})
    with pytest.raises(ModelLoadError, match=r"shape mismatch for embed\.weight: the model "
                                             r"expects \(6, 3\), the file has \(5, 3\)"):
        load_model(ckpt)


def test_load_missing_and_unexpected_keys(ckpt):
    weights = ckpt / WEIGHTS_FILE
    tensors = load_file(str(weights))
    del tensors["out.bias"]
    tensors["extra"] = torch.zeros(1)
    save_file(tensors, str(weights))
    with pytest.raises(ModelLoadError, match="missing out.bias; unexpected extra"):
        load_model(ckpt)


def test_load_corrupt_weights(ckpt):
    (ckpt / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        load_model(ckpt)


def test_load_class_check_and_map_location(ckpt):
    model = Tiny.load(ckpt, map_location="cpu")
    assert model.embed.weight.device.type == "cpu"

    @register_model("test-other")
    class Other(SaveLoadMixin, torch.nn.Module):
        pass

    try:
        with pytest.raises(ModelLoadError, match="holds a Tiny, not a"):
            Other.load(ckpt)
    finally:
        del MODEL_REGISTRY["test-other"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_map_location_cuda(ckpt):
    model = load_model(ckpt, map_location="cuda")
    assert model.embed.weight.is_cuda
    model.save(ckpt)
    assert load_model(ckpt).embed.weight.device.type == "cpu"


def test_a_subclass_that_only_reuses_traces_saves_as_its_registered_base(tmp_path):
    """`loss = dynnet.function(Base.loss, reuse_traces=True)` changes how the function
    runs, not what the model is: it saves under the base's name and loads as the base;
    an empty subclass too. One that defines anything else is refused."""
    import dynnet
    from dynnet.models import NaryTreeLSTM

    class Replaying(NaryTreeLSTM):
        loss = dynnet.function(NaryTreeLSTM.loss, reuse_traces=True)

    class Empty(NaryTreeLSTM):
        pass

    class Other(NaryTreeLSTM):
        loss = dynnet.function(NaryTreeLSTM.predict)

    for cls in (Replaying, Empty):
        model = cls(20, embed_dim=4, hidden_dim=4)
        model.save(tmp_path / cls.__name__)
        loaded = load_model(tmp_path / cls.__name__)
        assert type(loaded) is NaryTreeLSTM and _same_weights(model, loaded)
    with pytest.raises(ModelSaveError, match="not a registered model"):
        Other(20, embed_dim=4, hidden_dim=4).save(tmp_path / "other")
