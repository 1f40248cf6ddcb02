"""Parameter counts of the published models, written once for every test that checks sizes.

SPANet: trainable parameters of the authors' ImageNet classifier (backbone, final GroupNorm,
1000-class head), from their model code. SPANetV2: the authors' classifier counted from their
model code (``image_classification/models/spanetv2.py`` of DoranLyong/SPANetV2-official),
and the same without its final ``norm`` and MLP ``head``.
"""

SPANET_CLASSIFIER_PARAMS = {
    's': 28_605_096,
    'm': 41_686_952,
    'mx': 54_768_808,
    'b': 75_856_168,
    'bx': 99_718_312,
}

SPANETV2_CLASSIFIER_PARAMS = {
    's18_pure': 29_162_892,
    's18_hybrid': 26_991_948,
    's36_pure': 44_098_608,
    's36_hybrid': 40_669_104,
    'm36_pure': 62_934_832,
    'm36_hybrid': 58_334_896,
    'b36_pure': 109_557_808,
    'b36_hybrid': 101_802_544,
}
SPANETV2_WITHOUT_NORM_AND_HEAD = {
    's18_pure': 26_058_148,
    's18_hybrid': 23_887_204,
    's36_pure': 40_993_864,
    's36_hybrid': 37_564_360,
    'm36_pure': 59_294_664,
    'm36_hybrid': 54_694_728,
    'b36_pure': 104_114_760,
    'b36_hybrid': 96_359_496,
}
