"""The supernet computes the same function and gradients as the recorded reference
(tests/supernet_golden.py), to 1e-6, in every topology, execution mode and radius: execution
changes (narrow tensors, batching, memory) must not change what is computed."""
import pytest
import torch

from supernet_golden import CASES, GOLDEN, case_key, compute


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("topology,sparse,rho", CASES, ids=[case_key(*c) for c in CASES])
def test_supernet_matches_recorded_reference(golden, topology, sparse, rho):
    want = golden[case_key(topology, sparse, rho)]
    got = compute(topology, sparse, rho)
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9, msg=key)
        else:
            assert g == pytest.approx(w, rel=1e-6, abs=1e-9), key
