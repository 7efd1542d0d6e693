import copy

import torch

from clipforget.models.weights import changed_keys as changed_keys
from clipforget.models.weights import clone_state, soup
from clipforget.stages.restore import select_alpha


def _perturbed(bundle):
    visual = copy.deepcopy(bundle.model.visual)
    with torch.no_grad():
        visual.layer4[1].conv3.weight.add_(0.01)
    return clone_state(bundle.model.visual), clone_state(visual)


def test_soup_endpoints_are_exact(bundle):
    theta_0, theta_u = _perturbed(bundle)
    at_zero, at_one = soup(theta_u, theta_0, 0.0), soup(theta_u, theta_0, 1.0)
    assert all(torch.equal(at_zero[k], theta_0[k]) for k in theta_0)
    assert all(torch.equal(at_one[k], theta_u[k]) for k in theta_u)
    half = soup(theta_u, theta_0, 0.5)
    key = "layer4.1.conv3.weight"
    assert torch.allclose(half[key], (theta_0[key] + theta_u[key]) / 2)
    assert changed_keys(theta_u, theta_0) == [key]


def test_select_alpha_keeps_forget_at_floor_and_maximises_retain():
    curve = [
        {"alpha": 0.0, "forget": 0.9, "retain": 0.9},
        {"alpha": 0.3, "forget": 0.2, "retain": 0.88},
        {"alpha": 0.5, "forget": 0.01, "retain": 0.85},
        {"alpha": 0.7, "forget": 0.0, "retain": 0.8},
        {"alpha": 1.0, "forget": 0.0, "retain": 0.7},
    ]
    assert select_alpha(curve, "forget", "retain", tolerance=0.02) == 0.5
    assert select_alpha(curve, "forget", "retain", tolerance=0.0) == 0.7
