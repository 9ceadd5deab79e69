"""Test-wide guards: no network (a test that needs it is broken), offline Hugging Face."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        allowed = self.family == socket.AF_UNIX or ipaddress.ip_address(host).is_loopback
    except ValueError:
        allowed = host == "localhost"
    if not allowed:
        raise RuntimeError(f"test tried to reach the network ({address}); tests must run offline")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only


@pytest.fixture(scope="session")
def tiny_llava():
    from tests.helpers import load_builtin

    return load_builtin("tiny_llava")


@pytest.fixture(scope="session")
def tiny_open_clip():
    from tests.helpers import load_builtin

    return load_builtin("tiny_open_clip")


@pytest.fixture(scope="session")
def organism():
    from tests.helpers import load_builtin

    return load_builtin("organism")


@pytest.fixture(scope="module")
def classifier():
    """A seeded, frozen ResNet-18 (10 classes): the small classifier on which PGD and APGD are compared with
    torchattacks step for step (tests/test_pgd.py, tests/test_apgd.py)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
