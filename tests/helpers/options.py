"""``--cfg-options`` for the end-to-end runs: a tiny arch and the generated data's scale."""

# A SPANet small enough for quick tests yet with every feature of the real ones: four
# stages, three chunks per SPAM, both radii and ResScale in stages 3-4.
TINY_ARCH = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])
# A hybrid SPANetV2 small enough for quick tests: ExSPAM (4 heads) in stages 1-2, MixAttention
# and Attention (16-channel heads) in 3-4. Its widths differ from its map sizes at 64x64
# input, so a channels-last map read the wrong way round shows.
TINY_HYBRID_V2_ARCH = dict(
    embed_dims=[8, 16, 32, 32],
    depths=[1, 1, 1, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
    attention_head_dims=16,
)
# Side of the generated images and of the scale the configs are overridden to.
E2E_IMAGE_SIZE = 64
COCO_NUM_TRAIN, COCO_NUM_VAL = 16, 8


def arch_options(arch=None):
    """``--cfg-options`` that replace the config's SPANet arch by ``arch`` (default the tiny
    one): ``arch`` is a name in the config, so the dict replaces it with ``_delete_``."""
    arch = arch or TINY_ARCH
    return ['model.backbone.arch._delete_=True'] + [
        f'model.backbone.arch.{key}={_cfg_value(value)}' for key, value in arch.items()
    ]


def _cfg_value(value):
    """A value as MMEngine's DictAction parses it (lists without spaces)."""
    if isinstance(value, (list, tuple)):
        inner = ','.join(_cfg_value(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner})'
    return str(value)


def cfg_options(**options):
    """``key=value`` strings from keyword arguments whose ``__`` stands for ``.``."""
    return [f'{key.replace("__", ".")}={_cfg_value(value)}' for key, value in options.items()]


def coco_data_options(coco_shapes):
    """``--cfg-options`` that point an MMDetection COCO config's loaders and evaluators at the
    generated data of ``spanet_mm.datasets.make_coco_shapes(..., categories='coco')``, whose
    json names COCO's 80 categories as the config's classes do."""
    # The shapes' own category names match none of an 80-class config's classes: its
    # CocoDataset would find no annotations.
    assert coco_shapes['categories'] == 'coco', (
        "80-class COCO configs need make_coco_shapes(..., categories='coco'), "
        f'got categories={coco_shapes["categories"]!r}'
    )
    root = coco_shapes['data_root'].rstrip('/') + '/'
    return cfg_options(
        **{
            'train_dataloader__dataset__data_root': root,
            'val_dataloader__dataset__data_root': root,
            'test_dataloader__dataset__data_root': root,
            'val_evaluator__ann_file': coco_shapes['val_ann'],
            'test_evaluator__ann_file': coco_shapes['val_ann'],
        }
    )


def write_classifier_config(path, arch, num_classes):
    """A user's own MMPretrain config file: an ImageNet-style classifier (GroupNorm'ed last
    stage, global average pooling, linear head) around a SPANet of ``arch``."""
    width = arch['embed_dims'][-1]
    path.write_text(f"""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='SPANet', arch={arch!r}, out_indices=(3, )),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes={num_classes}, in_channels={width},
                       loss=dict(type='CrossEntropyLoss')))
""")
    return str(path)
