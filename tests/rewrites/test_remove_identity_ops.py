import torch
import torch.nn.functional as F

from ._helpers import ATOL, counts, export, max_diff, rewrite

RID = "common::remove_identity_ops"


def test_eval_dropouts_removed():
    x = torch.randn(2, 4, 8, 8)
    ep = export(
        lambda x, m: F.dropout(m["d2"](torch.relu(m["d"](x))), 0.3, training=False) + 1,
        x,
        d=torch.nn.Dropout(0.5),
        d2=torch.nn.Dropout2d(0.1),
    )
    before = counts(ep)
    assert before.get("dropout", 0) + before.get("feature_dropout", 0) == 3
    new, res = rewrite(ep, RID)
    assert res.fired == 3 and res.reason is None
    after = counts(new)
    assert "dropout" not in after and "feature_dropout" not in after and after["relu"] == 1
    assert max_diff(ep, new, x) <= ATOL


def test_training_dropout_left_alone():
    x = torch.randn(2, 4)
    ep = export(lambda x, m: F.dropout(x, 0.5, training=True) * 0 + x, x)
    new, res = rewrite(ep, RID)
    assert res.fired == 0 and "training-mode dropout" in res.reason
    assert counts(new)["dropout"] == 1


def test_nothing_to_remove():
    ep = export(lambda x, m: x + 1, torch.randn(2, 3))
    _, res = rewrite(ep, RID)
    assert res.fired == 0 and res.reason == "no dropout/alias/detach/clone node"
