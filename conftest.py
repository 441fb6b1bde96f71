"""Root conftest: puts ``torch`` into the namespace of every doctest (``--doctest-modules``)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch
