"""Shared fixtures of the backbone tests: random-init backbones built once per session."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from sppdet.backbones import Backbone, build_backbone


@pytest.fixture(scope="session")
def random_backbone() -> Callable[[str], Backbone]:
    """``get(name)``: a seeded random-init backbone, built once per session (do not modify;
    ``copy.deepcopy`` it first)."""
    cache: dict[str, Backbone] = {}

    def get(name: str) -> Backbone:
        if name not in cache:
            cache[name] = build_backbone(name, pretrained=False, seed=0)
        return cache[name]

    return get


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep unit tests light on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)
