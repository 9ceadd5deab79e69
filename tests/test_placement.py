"""Placement: CPU always works; CUDA paths run when a GPU is present and skip cleanly otherwise."""

from __future__ import annotations

import pytest
import torch

from mmsafety.errors import ConfigError
from mmsafety.placement import resolve_placement

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_cpu():
    p = resolve_placement("cpu", "float32")
    assert p.device.type == "cpu" and p.dtype == torch.float32


def test_bad_dtype_names_the_choices():
    with pytest.raises(ConfigError, match="float32, bfloat16, float16"):
        resolve_placement("cpu", "float64")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_says_what_to_use():
    with pytest.raises(ConfigError, match="use placement=cpu"):
        resolve_placement("cuda:0", "bfloat16")


@pytest.mark.gpu
@needs_gpu
def test_organism_on_gpu_in_bf16_matches_cpu():
    from tests.helpers import load_builtin

    cpu, gpu = load_builtin("organism"), load_builtin("organism", dtype="bfloat16", device="cuda:0")
    pixels = torch.rand(2, 3, *cpu.input_size, generator=torch.Generator().manual_seed(0))
    a = cpu.target_loss(pixels, ["Hi", "What colour?"], ["red", "blue"])
    b = gpu.target_loss(pixels, ["Hi", "What colour?"], ["red", "blue"]).cpu()
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.15, rtol=0.1)
