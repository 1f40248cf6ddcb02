"""Inference with weights converted to bfloat16 once (the CPU inference tip of docs/deployment.md),
checked the same way for both generations."""

import torch


def check_bfloat16_weights(model, x, autocast):
    """Convert ``model`` (eval mode, float32) to bfloat16 in place and run ``x`` through it,
    under autocast with float32 input or (``autocast=False``) on bfloat16 input. Every output
    must be bfloat16 and about as close to the float32 outputs as autocast with float32
    weights gets."""
    bf16 = torch.bfloat16
    with torch.no_grad():
        exact = model(x)
        with torch.autocast('cpu', dtype=bf16):
            amp = model(x)
        model.bfloat16()
        if autocast:
            with torch.autocast('cpu', dtype=bf16):
                outs = model(x)
        else:
            outs = model(x.to(bf16))
    assert len(outs) == len(exact)
    for out, amp_out, ref in zip(outs, amp, exact):
        assert out.dtype == bf16 and out.shape == ref.shape
        error = (out.float() - ref).norm() / ref.norm()
        amp_error = (amp_out.float() - ref).norm() / ref.norm()
        # bfloat16 keeps about 3 significant digits; rounding the few parameters that
        # autocast keeps in float32 (norms, layer scales, biases) adds a little.
        assert error < 2 * amp_error + 1e-3 and error < 0.03, (float(error), float(amp_error))
