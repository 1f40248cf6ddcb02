"""The autocast setting of the inference wrappers (spanet_mm/deployment/amp.py)."""

import pytest
import torch

from spanet_mm.deployment.amp import autocast_or_off, check_amp_dtype


@pytest.mark.parametrize('amp_dtype', [None, torch.bfloat16, torch.float16])
def test_floating_point_dtypes_and_none_are_accepted(amp_dtype):
    check_amp_dtype(amp_dtype)


@pytest.mark.parametrize('amp_dtype', [torch.int8, 'bfloat16', 16])
def test_other_values_are_refused_by_name(amp_dtype):
    with pytest.raises(ValueError, match=f'got {amp_dtype!r}'):
        check_amp_dtype(amp_dtype)


def test_none_switches_a_callers_autocast_off():
    x = torch.randn(4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
        with autocast_or_off('cpu', None):
            assert (x @ x).dtype == torch.float32
        with autocast_or_off('cpu', torch.bfloat16):
            assert (x @ x).dtype == torch.bfloat16
