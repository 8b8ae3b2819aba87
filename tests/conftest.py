"""Suite-wide settings and shared fixtures.

The tests evaluate many small tensors; on a 2-core machine torch's intra-op thread pool costs
more than it saves there (10-30x slower small calls under load), so the suite runs on one
thread. Library code never changes the thread count.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Fresh registry tables (the zoo counts as loaded), restored after the test; offline."""
    from rrrdsl.models import registry

    monkeypatch.setattr(registry, "_REGISTERED", {kind: {} for kind in registry._REGISTERED})
    monkeypatch.setattr(registry, "_CACHE", {})
    monkeypatch.setattr(registry, "_zoo_loaded", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
