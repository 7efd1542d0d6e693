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


def test_select_alpha_also_needs_retrieval_at_its_floor():
    curve = [
        {"alpha": 0.5, "forget": 0.01, "retain": 0.85, "forget_retrieval": 0.9},  # classified away, still on top
        {"alpha": 0.7, "forget": 0.0, "retain": 0.8, "forget_retrieval": 0.3},
        {"alpha": 1.0, "forget": 0.0, "retain": 0.7, "forget_retrieval": 0.28},
    ]
    assert select_alpha(curve, "forget", "retain", tolerance=0.02) == 0.5  # the paper's rule: accuracy only
    assert select_alpha(curve, "forget", "retain", tolerance=0.02, retrieval_tolerance=0.05) == 0.7
    assert select_alpha(curve, "forget", "retain", tolerance=0.02, retrieval_tolerance=0.0) == 1.0


def test_top_share_counts_forget_images_in_the_top_ranks():
    from clipforget.stages.restore import top_share

    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    near = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2]]), dim=-1)
    far = torch.nn.functional.normalize(torch.tensor([[0.1, 1.0], [0.0, 1.0], [0.2, 1.0]]), dim=-1)
    assert top_share(near, far, text) == 1.0  # the two forget images are the two best matches
    assert top_share(far[:2], torch.cat([near, far[2:]]), text) == 0.0
    assert top_share(torch.cat([near[:1], far[:1]]), torch.cat([near[1:], far[1:]]), text) == 0.5
