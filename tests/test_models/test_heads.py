"""SPANetV2's ImageNet head (spanet_mm/models/heads.py): the authors' formula and its checks."""

import pytest
import torch

from spanet_mm.models.heads import SPANetV2ClsHead

# The head builds its loss from MMPretrain's registry, as inside an MMPretrain config.
pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_head_is_fc2_of_the_normed_squared_relu():
    torch.manual_seed(0)
    head = SPANetV2ClsHead(num_classes=5, in_channels=8, hidden_ratio=2).eval()
    assert head.fc1.out_features == 16
    x = torch.randn(3, 8)
    hidden = torch.nn.functional.layer_norm(
        torch.relu(x @ head.fc1.weight.t() + head.fc1.bias) ** 2,
        (16,),
        head.norm.weight,
        head.norm.bias,
    )
    expected = hidden @ head.fc2.weight.t() + head.fc2.bias
    torch.testing.assert_close(head((torch.randn(3, 4), x)), expected)


def test_unpooled_features_are_refused():
    head = SPANetV2ClsHead(num_classes=5, in_channels=8)
    with pytest.raises(ValueError, match=r'pooled features of shape \(N, 8\).*\(2, 8, 7, 7\)'):
        head((torch.randn(2, 8, 7, 7),))


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(num_classes=0), 'num_classes must be a positive int'),
        (dict(in_channels=-3), 'in_channels must be a positive int'),
        (dict(dropout=1.0), r'dropout must be in \[0, 1\)'),
        (dict(hidden_channels=0), 'the hidden width must be a positive int'),
    ],
)
def test_settings_out_of_range_are_refused(kwargs, message):
    settings = {**dict(num_classes=5, in_channels=8), **kwargs}
    with pytest.raises(ValueError, match=message):
        SPANetV2ClsHead(**settings)
