"""Tests written to kill surviving mutants of `make mutation` (docs/testing.md lists which): each
asserts behaviour against a reference outside the module it checks."""

from __future__ import annotations

import pytest
import torch


def test_lpips_looks_for_alexnet_where_torchvision_itself_reads_it(tmp_path, monkeypatch):
    """The file `lpips_available` checks is the one torchvision loads for AlexNet_Weights.DEFAULT:
    a marker saved there is what torch.hub returns, without any download."""
    from torchvision.models import AlexNet_Weights

    from visual_attacks import stealth

    def no_download(*args, **kwargs):
        raise AssertionError(f"torch.hub would download {args[0]}: it did not find the file at {args[1]}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    path = stealth.alexnet_weights_path()
    assert not stealth.lpips_available()
    path.parent.mkdir(parents=True)
    torch.save({"marker": torch.tensor([7])}, path)
    assert stealth.lpips_available()
    loaded = torch.hub.load_state_dict_from_url(AlexNet_Weights.DEFAULT.url, progress=False)
    assert loaded["marker"].tolist() == [7]
