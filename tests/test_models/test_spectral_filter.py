"""The Spectral Pooling Filter against the paper's equations, and its operator cache.

The yardstick is the float64 FFT formula of Eq. 17 (``paper_filter``: full complex FFT,
``fftshift``, mask, inverse FFT), written independently in tests/helpers/spanet_formulas.py.
"""

import gc
import warnings

import pytest
import torch

from spanet_mm import SpectralPoolingFilter, spectral_mask
from spanet_mm.models.spectral_filter import DENSE_LIMIT

from helpers.spanet_formulas import paper_filter, paper_mask

# Feature sizes the backbone meets (333x517 and 800x1216 inputs, 14x14 at 224), odd and
# non-square ones, and sizes smaller than the disk.
SIZES = [
    (200, 304),
    (84, 130),
    (56, 56),
    (57, 56),
    (25, 53),
    (21, 33),
    (14, 14),
    (11, 17),
    (8, 8),
    (7, 7),
    (4, 4),
    (3, 5),
    (2, 2),
    (1, 1),
    (1, 7),
]
LAYOUTS = ['contiguous', 'channels_last']
BALANCES = [0.7] * 3 + [0.8] * 3 + [0.9] * 2


def to_layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def live_tensor_bytes():
    """Bytes of all tensor storages reachable from Python (each storage once)."""
    gc.collect()
    storages = {}
    with warnings.catch_warnings():  # isinstance() on deprecated torch objects warns
        warnings.simplefilter('ignore')
        tensors = [obj for obj in gc.get_objects() if torch.is_tensor(obj)]
    for tensor in tensors:
        try:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except RuntimeError:
            # Tensors without real storage (torch.compile's fake tensors that an earlier
            # test may leave behind) hold no memory.
            continue
    return sum(storages.values())


@pytest.mark.parametrize(
    'size,radius,counts',
    [
        # (disk d < r, ring d == r, outside)
        ((56, 56), 2, (9, 4, 56 * 56 - 13)),
        ((56, 56), 1, (1, 4, 56 * 56 - 5)),
        ((57, 31), 2, (9, 4, 57 * 31 - 13)),
        ((7, 7), 1, (1, 4, 44)),
        ((4, 4), 2, (9, 2, 5)),  # offsets -2..1: the ring's +2 bins do not exist
        ((3, 3), 2, (9, 0, 0)),
        ((2, 2), 1, (1, 2, 1)),
        ((1, 1), 1, (1, 0, 0)),
    ],
)
def test_mask_counts(size, radius, counts):
    balance = 0.8
    mask = spectral_mask(*size, radius, balance)
    outside = torch.isclose(mask, torch.tensor(1 - balance, dtype=mask.dtype))
    found = ((mask == balance).sum().item(), (mask == 1 / 3).sum().item(), outside.sum().item())
    assert found == counts
    assert mask[size[0] // 2, size[1] // 2] == balance  # the zero frequency
    assert torch.equal(mask, paper_mask(*size, radius, balance))


def test_sizes_cover_both_forms():
    """SIZES exercise the dense form (small maps) and the separable one (large maps)."""
    for radius in (1, 2):
        rows = 2 * radius + 1
        assert any(h * w * rows <= DENSE_LIMIT for h, w in SIZES)
        assert any(h * w * rows > DENSE_LIMIT for h, w in SIZES)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('radius', [1, 2, 2.5])
@pytest.mark.parametrize('batch', [1, 2])
def test_filter_matches_paper(size, radius, layout, batch):
    x = torch.randn(batch, len(BALANCES), *size)
    y = SpectralPoolingFilter(radius, BALANCES)(to_layout(x, layout))
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y.double(), paper_filter(x, radius, BALANCES), atol=2e-6, rtol=1e-5)
    # The output keeps the input's memory format (channels-last data stays so).
    assert y.is_contiguous(memory_format=torch.channels_last) == (
        to_layout(x, layout).is_contiguous(memory_format=torch.channels_last)
    )


@pytest.mark.parametrize('size', [(200, 304), (14, 14), (7, 7), (3, 5), (1, 1)])
@pytest.mark.parametrize('radius', [1, 2])
@pytest.mark.parametrize('batch', [1, 2])  # one image takes plain products, more batched ones
def test_filter_nhwc_matches_paper(size, radius, batch):
    """The NHWC form SPAM calls, in float32 and in bfloat16 (its own dtype)."""
    spf = SpectralPoolingFilter(radius, BALANCES)
    x = torch.randn(batch, len(BALANCES), *size)
    expected = paper_filter(x, radius, BALANCES).permute(0, 2, 3, 1)
    y = spf.filter_nhwc(x.permute(0, 2, 3, 1).contiguous())
    assert y.dtype == torch.float32 and y.shape == (batch, *size, len(BALANCES))
    torch.testing.assert_close(y.double(), expected, atol=2e-6, rtol=1e-5)
    half = x.bfloat16()
    y = spf.filter_nhwc(half.permute(0, 2, 3, 1).contiguous())
    assert y.dtype == torch.bfloat16
    exact = paper_filter(half.float(), radius, BALANCES).permute(0, 2, 3, 1)
    # A few bfloat16 roundings (the basis, the coefficients, the sum) instead of one.
    torch.testing.assert_close(y.double(), exact, atol=3e-2, rtol=2e-2)


def test_filter_nhwc_rejects_wrong_layout():
    spf = SpectralPoolingFilter(2, BALANCES)
    with pytest.raises(
        ValueError,
        match=r'expects contiguous \(N, H, W, 8\) data, got '
        r'\(1, 8, 6, 6\)',
    ):
        spf.filter_nhwc(torch.randn(1, 8, 6, 6))


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('radius', [1, 2])
def test_filter_gradient_matches_paper(layout, radius):
    balances = [0.7, 0.8, 0.9, 0.9]
    x = torch.randn(2, 4, 13, 22)
    xl = to_layout(x, layout).requires_grad_()
    weight = torch.randn(2, 4, 13, 22)
    (SpectralPoolingFilter(radius, balances)(xl) * weight).sum().backward()
    x64 = x.detach().double().requires_grad_()
    (paper_filter(x64, radius, balances) * weight).sum().backward()
    torch.testing.assert_close(xl.grad.double(), x64.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('size', [(19, 28), (56, 56)])
def test_filter_bfloat16_autocast_runs_in_float32(layout, size):
    balances = [0.7, 0.8, 0.9]
    x = torch.randn(1, 3, *size).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = SpectralPoolingFilter(2, balances)(to_layout(x, layout))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    # The filter sees the bfloat16 values and computes in float32: only the final
    # rounding to bfloat16 separates it from the exact result.
    expected = paper_filter(x.float(), 2, balances)
    torch.testing.assert_close(y.double(), expected.bfloat16().double(), atol=1e-2, rtol=8e-3)


def test_balance_half_halves_the_input():
    # lambda = 0.5 weighs every frequency 0.5 except the 1/3 ring; radius 0.5 has no ring.
    x = torch.randn(1, 2, 9, 12)
    y = SpectralPoolingFilter(0.5, [0.5, 0.5])(x)
    torch.testing.assert_close(y, 0.5 * x)


def test_filter_has_no_state():
    spf = SpectralPoolingFilter(2, [0.7, 0.9])
    spf(torch.randn(1, 2, 16, 16))
    spf(torch.randn(1, 2, 9, 13))
    assert list(spf.state_dict()) == [] and list(spf.parameters()) == []
    assert list(spf.buffers()) == []


def test_operator_cache_is_bounded_and_shared():
    """Hundreds of distinct sizes: the table never holds more than its capacity, and the
    memory of all live tensors stops growing once it is full."""
    SpectralPoolingFilter.clear_cache()
    capacity = SpectralPoolingFilter.cache_info().capacity
    cpu = torch.device('cpu')
    # Wide filters, so that an unbounded cache would grow by tens of MB.
    spf = SpectralPoolingFilter(2, [0.7] * 256 + [0.9] * 256)
    twin = SpectralPoolingFilter(2, [0.7] * 256 + [0.9] * 256)
    with torch.no_grad():
        spf(torch.randn(1, 512, 5, 6))
        twin(torch.randn(1, 512, 5, 6))
    # Filters with the same radius and balances share one operator set per size.
    assert SpectralPoolingFilter.cache_info().entries == 1
    # Sizes large enough for the separable form, whose operators have about the same size
    # at every feature size (the coefficients dominate); built as a forward would build
    # them, without running the filter.
    sizes = [(40 + i % 16, 40 + i // 16) for i in range(3 * capacity + 200)]
    for h, w in sizes[:capacity]:
        spf.operators(h, w, cpu)
    full = live_tensor_bytes()
    for h, w in sizes[capacity:]:
        spf.operators(h, w, cpu)
        assert SpectralPoolingFilter.cache_info().entries <= capacity
    after = live_tensor_bytes()
    assert SpectralPoolingFilter.cache_info().entries == capacity
    # One operator set here is about 100 kB (coefficients for 512 channels), so an unbounded
    # table would have grown by tens of MB; the evicted sets are freed (the bases grow a
    # little with the size: a few kB per set).
    assert after - full < 1024 * 1024, (full, after)


def test_answers_stay_exact_after_eviction():
    SpectralPoolingFilter.clear_cache()
    capacity = SpectralPoolingFilter.cache_info().capacity
    spf = SpectralPoolingFilter(2, BALANCES)
    x = torch.randn(1, len(BALANCES), 12, 20)
    first = spf(x)
    for i in range(capacity + 5):  # every older entry is evicted
        spf(torch.randn(1, len(BALANCES), 3, 30 + i))
    again = spf(x)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    torch.testing.assert_close(again.double(), paper_filter(x, 2, BALANCES), atol=2e-6, rtol=1e-5)


def test_operators_built_in_inference_mode_serve_autograd():
    SpectralPoolingFilter.clear_cache()
    spf = SpectralPoolingFilter(1, [0.7, 0.9])
    with torch.inference_mode():
        spf(torch.randn(1, 2, 10, 11))
    x = torch.randn(1, 2, 10, 11, requires_grad=True)
    spf(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_filter_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r'expects \(N, 3, H, W\), got \(1, 4, 8, 8\)'):
        SpectralPoolingFilter(2, [0.7, 0.8, 0.9])(torch.randn(1, 4, 8, 8))
