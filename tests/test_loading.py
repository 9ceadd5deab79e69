"""Real loading code, offline: safetensors only by default, clear messages for what is missing."""

from __future__ import annotations

import shutil

import pytest
import torch

from mmsafety.errors import ModelNotFound, UnsafeCheckpoint
from mmsafety.models.llava import LlavaAdapter
from mmsafety.models.loading import LoadOptions, weights_sha256
from mmsafety.organisms.builders import built_path, ensure_built
from mmsafety.placement import resolve_placement

CPU = resolve_placement("cpu", "float32")


@pytest.fixture(scope="module")
def pickle_checkpoint(tmp_path_factory):
    """The tiny LLaVA re-saved with pickle weights (pytorch_model.bin) and no safetensors."""
    src = ensure_built("tiny_llava")
    dst = tmp_path_factory.mktemp("pickled") / "ckpt"
    shutil.copytree(src, dst)
    from safetensors.torch import load_file

    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_pickle_checkpoint_is_refused_by_default(pickle_checkpoint):
    with pytest.raises(UnsafeCheckpoint, match="pickle.*allow_pickle=true"):
        LlavaAdapter.load(str(pickle_checkpoint), LoadOptions(), CPU)


def test_pickle_checkpoint_loads_when_allowed(pickle_checkpoint):
    adapter = LlavaAdapter.load(str(pickle_checkpoint), LoadOptions(allow_pickle=True), CPU)
    reference = LlavaAdapter.load(str(ensure_built("tiny_llava")), LoadOptions(), CPU)
    pixels = torch.rand(1, 3, *adapter.input_size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adapter.target_loss(pixels, ["Hi"], ["red"]), reference.target_loss(pixels, ["Hi"], ["red"]))


def test_missing_hub_model_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFound) as err:
        LlavaAdapter.load("llava-hf/llava-1.5-7b-hf", LoadOptions(), CPU)
    message = str(err.value)
    assert "\n" not in message
    assert "empty-cache" in message and "huggingface-cli download llava-hf/llava-1.5-7b-hf" in message


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelNotFound, match="not a folder"):
        LlavaAdapter.load(str(tmp_path / "nope"), LoadOptions(), CPU)


def test_trust_remote_code_is_off_unless_set(monkeypatch):
    seen = {}
    import transformers

    real = transformers.LlavaForConditionalGeneration.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "from_pretrained", spy)
    LlavaAdapter.load(str(ensure_built("tiny_llava")), LoadOptions(), CPU)
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_weights_hash_is_stable_and_content_based(tmp_path):
    src = ensure_built("tiny_llava")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert weights_sha256(copy) == weights_sha256(src)
    assert built_path("tiny_llava") == src
