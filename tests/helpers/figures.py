"""Pictures for and from the analysis tools: small generated photographs, and checks that a
written PNG is a real figure."""

from pathlib import Path
from typing import List

import numpy as np
from skimage import io

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path, min_side: int = 50) -> None:
    """``path`` is a PNG of at least ``min_side`` pixels a side that is not a blank canvas."""
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    image = io.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 10


def write_photos(folder: Path) -> List[str]:
    """Two small 'photographs' of different sizes (smooth shapes plus a little noise) written
    into ``folder``; their paths."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate([(48, 72), (64, 56)]):
        yy, xx = np.mgrid[:h, :w]
        disk = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2).astype(float)
        image = np.stack([disk, xx / w, yy / h], axis=-1) * 200 + rng.uniform(0, 40, (h, w, 3))
        path = folder / f'photo{i}.png'
        io.imsave(str(path), image.astype(np.uint8), check_contrast=False)
        paths.append(str(path))
    return paths
