"""Shared fixtures: the small bundled model (shipped in assets/) and small real datasets from the data root."""

from __future__ import annotations

import pytest

from clipforget.core.paths import data_root
from clipforget.data.cifar10 import cifar10
from clipforget.models.factory import create_model, find_bundled_checkpoint

TEST_MODEL = "embedded-cifar"  # small and fast; tests of the default model ask for it by name


@pytest.fixture(scope="session")
def bundle():
    if find_bundled_checkpoint(TEST_MODEL) is None:
        pytest.fail(f"assets/{TEST_MODEL} is missing: run `python -m clipforget pretrain {TEST_MODEL}`")
    return create_model(TEST_MODEL)


@pytest.fixture(scope="session")
def has_data() -> bool:
    if not (data_root() / "cifar10" / "test").is_dir():
        pytest.skip(f"CIFAR-10 not found under the data root {data_root()} (set CLIPFORGET_DATA)")
    return True


@pytest.fixture(scope="session")
def cifar_small(bundle, has_data):
    """20 CIFAR-10 test images per class at the embedded model's size."""
    return cifar10("test", bundle.image_size, per_class=20)
