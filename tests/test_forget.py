import torch
from torch import nn

from clipforget.stages.forget import complementary_ce, layer_fisher, rank_layers


class TwoBranch(nn.Module):
    """Forget inputs live in the second half of the features, retain inputs in the first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(8, 8)
        self.branch_a = nn.Linear(4, 3, bias=False)
        self.planted = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        h = self.shared(x)
        return self.branch_a(h[:, :4] * (x[:, :4].abs().sum(1, keepdim=True) > 0)) + self.planted(
            h[:, 4:] * (x[:, 4:].abs().sum(1, keepdim=True) > 0)
        )


def test_planted_layer_wins_relative_fisher_ranking():
    model = TwoBranch()
    gen = torch.Generator().manual_seed(1)
    forget = torch.zeros(32, 8)
    forget[:, 4:] = torch.randn(32, 4, generator=gen)
    retain = torch.zeros(32, 8)
    retain[:, :4] = torch.randn(32, 4, generator=gen)
    targets = torch.randint(0, 3, (32,), generator=gen)

    def loss_fn(m, x, y):
        return nn.functional.cross_entropy(m(x), y)

    names = ["shared", "branch_a", "planted"]
    f_forget = layer_fisher(model, names, loss_fn, forget, targets, micro_batch=4)
    f_retain = layer_fisher(model, names, loss_fn, retain, targets, micro_batch=4)
    ranking = rank_layers(f_forget, f_retain, model)
    assert ranking[0].name == "planted"
    assert ranking[-1].name == "branch_a"
    # plain (forget-only) Fisher would not single the planted layer out against the shared one this clearly
    assert ranking[0].relative > 100 * ranking[1].relative


def test_complementary_ce_is_bounded_and_minimal_when_forgotten():
    confident = torch.tensor([[50.0, 0.0]])
    forgotten = torch.tensor([[-50.0, 0.0]])
    target = torch.tensor([0])
    high = complementary_ce(confident, target, eps=1e-4)
    low = complementary_ce(forgotten, target, eps=1e-4)
    assert torch.isfinite(high) and float(high) <= -torch.log(torch.tensor(1e-4)) + 1e-6
    assert float(low) >= 0.0 and float(low) < 1e-6


def test_relative_fisher_is_per_layer_scale_free():
    """Stem layers' Fisher is ~1e6 times a last block's; the ratio, not the magnitude, must decide the rank."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    f_forget = {"0": 1.2e-1, "1": 2.0e-8, "2": 0.5e-4}
    f_retain = {"0": 1.0e-1, "1": 1.0e-8, "2": 1.0e-4}
    ranking = rank_layers(f_forget, f_retain, model)
    assert [r.name for r in ranking] == ["1", "0", "2"]
    assert abs(ranking[0].relative - 2.0) < 1e-9
    scaled = rank_layers({k: v * 1e6 for k, v in f_forget.items()}, {k: v * 1e6 for k, v in f_retain.items()}, model)
    assert [r.name for r in scaled] == [r.name for r in ranking]


def test_similarity_anchor_is_zero_at_the_original_and_grows_with_drift(bundle, cifar_small):
    from clipforget.data.task import UnlearningTask
    from clipforget.models.encode import image_features, text_classifier
    from clipforget.stages.forget import ForgetConfig, ForgetLoss

    forget = cifar_small.where([x == "airplane" for x in cifar_small.labels])
    retain = cifar_small.where([x != "airplane" for x in cifar_small.labels])
    task = UnlearningTask(forget, retain, sorted(set(cifar_small.labels)))
    classifier = text_classifier(bundle, task.classnames)
    loss = ForgetLoss(bundle, task, classifier, ForgetConfig(anchor_weight=10.0))
    with torch.no_grad():
        original = image_features(bundle, retain.images[:16])
    assert float(loss.anchor_term(original, original)) == 0.0
    airplane = classifier[task.classnames.index("airplane")]
    moved = torch.nn.functional.normalize(original - 0.3 * airplane, dim=-1)  # every image away from "airplane"
    assert float(loss.anchor_term(moved, original)) > 0.01
    unanchored = ForgetLoss(bundle, task, classifier, ForgetConfig(anchor_weight=0.0))
    assert float(unanchored.anchor_term(moved, original)) == 0.0
    # extra forget prompts join the label text in the hinge and the anchor
    task.forget_prompts = ("jet", "a plane in the sky")
    with_prompts = ForgetLoss(bundle, task, classifier, ForgetConfig(anchor_weight=10.0))
    assert with_prompts.texts.shape[0] == 3 and with_prompts.tau.shape == (3,)
    assert float(with_prompts.hinge(original)) >= 0.0


def test_fisher_ranking_considers_only_the_last_share_of_layers(bundle, cifar_small):
    from clipforget.data.task import UnlearningTask
    from clipforget.models.layers import adaptable_layers
    from clipforget.stages.forget import ForgetConfig, relative_fisher

    is_airplane = [x == "airplane" for x in cifar_small.labels]
    task = UnlearningTask(cifar_small.where(is_airplane), cifar_small.where([not a for a in is_airplane]),
                          sorted(set(cifar_small.labels)))
    names = adaptable_layers(bundle.model.visual, bundle.normalize(cifar_small.images[:2]))
    cfg = ForgetConfig(fisher_samples=8, fisher_micro_batch=4, candidate_share=0.25)
    ranked = {r.name for r in relative_fisher(bundle, task, cfg)}
    assert ranked == set(names[len(names) - round(len(names) * 0.25):])
    cfg.candidate_share = 1.0
    assert {r.name for r in relative_fisher(bundle, task, cfg)} == set(names)
