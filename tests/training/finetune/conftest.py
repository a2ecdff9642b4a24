"""Fake pipeline artifacts shared by the fine-tuning tests (made once for the package)."""

import pytest

from tests.fake_artifacts import make_fake_pipeline_inputs


@pytest.fixture(scope="package")
def fake(tmp_path_factory):
    return make_fake_pipeline_inputs(tmp_path_factory.mktemp("fake"),
                                     splits={"train": 24, "val": 10})
