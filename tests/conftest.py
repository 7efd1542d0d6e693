"""Shared fixtures: the embedded model (shipped in assets/) and small real datasets from the data root."""

from __future__ import annotations

import pytest

from clipforget import data
from clipforget.models import create_model, find_embedded_checkpoint
from clipforget.paths import data_root


@pytest.fixture(scope="session")
def bundle():
    if find_embedded_checkpoint() is None:
        pytest.fail("assets/embedded is missing: run `python -m index_builder.pretrain_embedded`")
    return create_model("embedded")


@pytest.fixture(scope="session")
def has_data() -> bool:
    if not (data_root() / "cifar10" / "test").is_dir():
        pytest.skip(f"CIFAR-10 not found under the data root {data_root()} (set CLIPFORGET_DATA)")
    return True


@pytest.fixture(scope="session")
def cifar_small(bundle, has_data):
    """20 CIFAR-10 test images per class at the embedded model's size."""
    return data.cifar10("test", bundle.image_size, per_class=20)
