"""The SPANetV2 ImageNet classification head, as an MMPretrain head.

This module imports MMPretrain. ``import spanet_mm`` does not import it: the name
``SPANetV2ClsHead`` is registered in MMEngine's root ``MODELS`` by
:mod:`spanet_mm.models.spanetv2` with a small builder that imports this module only when a
head is built, so detection and segmentation users never pay for MMPretrain.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from torch import Tensor, nn


class SPANetV2ClsHead(ClsHead):
    """The authors' MLP head: ``fc2(Dropout(LN(relu(fc1(x)) ** 2)))``.

    It takes the pooled, normed features of the last stage, i.e. the output of
    ``SPANetV2(out_indices=(3, ), gap_before_final_norm=True)``; the keys ``head.fc1``,
    ``head.norm`` and ``head.fc2`` inside an ``ImageClassifier`` are those of the release.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the input feature.
        hidden_channels (int, optional): Width of the hidden layer; defaults to
            ``hidden_ratio * in_channels``.
        hidden_ratio (float): Hidden width relative to ``in_channels`` when
            ``hidden_channels`` is not given. Defaults to 4.
        dropout (float): Dropout before ``fc2`` (the release's ``head_dropout``).
            Defaults to 0.
        init_cfg (dict, optional): Initialisation; defaults to the release's truncated
            normal (std .02) for both linear layers with zero biases.
        **kwargs: ``loss``, ``topk`` and ``cal_acc`` of
            :class:`mmpretrain.models.heads.ClsHead`.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        hidden_channels: Optional[int] = None,
        hidden_ratio: float = 4,
        dropout: float = 0.0,
        init_cfg: Optional[Union[dict, Sequence[dict]]] = None,
        **kwargs,
    ) -> None:
        if init_cfg is None:
            init_cfg = dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0)
        super().__init__(init_cfg=init_cfg, **kwargs)
        if not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        if not (isinstance(in_channels, int) and in_channels > 0):
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {dropout!r}')
        hidden = hidden_channels if hidden_channels is not None else int(hidden_ratio * in_channels)
        if not (isinstance(hidden, int) and hidden > 0):
            raise ValueError(f'the hidden width must be a positive int, got {hidden!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.fc1 = nn.Linear(in_channels, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """The hidden features before ``fc2``, from the last of ``feats`` ``(N, C)``."""
        x = feats[-1]
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'SPANetV2ClsHead expects pooled features of shape (N, {self.in_channels}) '
                f'(a backbone with gap_before_final_norm=True), got {tuple(x.shape)}'
            )
        return self.norm(torch.square(F.relu(self.fc1(x))))

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        return self.fc2(self.dropout(self.pre_logits(feats)))
