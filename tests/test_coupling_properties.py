"""Mathematical properties that hold for every backend: gradcheck, the log-det against slogdet of the Jacobian,
and invertibility (SPEC sections 1 and 3)."""

import dataclasses

import pytest
import torch

from nf_kernels import _dispatch

from conftest import CLIP_BOUNDS, CPU_BACKENDS, gradcheck, H_LAYOUTS, MASK_CASES, SCALES, Coupling, MaskCase, all_couplings, supports, with_backends

# Small shapes: gradcheck and jacobian cost one evaluation per input element.
SMALL_MASKS = [
    MaskCase("half", (2, 5)),
    MaskCase("half", (2, 3, 2, 3)),
    MaskCase("checkerboard", (2, 2, 3, 3)),
    MaskCase("bool", (2, 7)),
    MaskCase("compact", (2, 7)),
    MaskCase("compact", (2, 4, 2, 3)),
]


def _gradcheck_cases():
    cases = []
    for i, mask in enumerate(SMALL_MASKS):
        for rev in (False, True):
            cases.append(Coupling(mask, None, flip=bool(i % 2), reverse=rev))
            for j, scale in enumerate(SCALES):
                cases.append(Coupling(mask, scale, flip=bool((i + j) % 2), shift_first=bool(j % 2), reverse=rev,
                                      h_layout=H_LAYOUTS[(i + j + rev) % len(H_LAYOUTS)]))  # fmt: skip
    return cases


def _inside_the_clip(case, h):
    """For "clip": s_raw strictly inside its bounds, where the map's derivative is 1 and finite differences agree
    (outside, pyro's pass-through gradient is 1 by convention, 0 by differences: tests/test_compat_pyro.py)."""
    if case.scale != "clip":
        return h
    low, high = CLIP_BOUNDS
    return case.with_s(h, case.split(h)[0].clamp(low + 0.1, high - 0.1))


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, _gradcheck_cases()))
def test_gradcheck_float64(case, backend):
    x, h = case.inputs(torch.float64)
    h = _inside_the_clip(case, h)
    x.requires_grad_(True)
    h.requires_grad_(True)
    assert gradcheck(lambda x, h: case(x, h, backend), (x, h), backend, atol=1e-7)


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, [c for c in _gradcheck_cases() if not c.additive]))
def test_logdet_equals_slogdet_of_jacobian(case, backend):
    x, h = case.inputs(torch.float64, seed=3)
    sample_shape = x.shape[1:]
    for b in range(x.shape[0]):
        # h is held fixed: in a layer it depends only on the kept elements, so the Jacobian is triangular.
        def one_sample(flat):
            y, _ = case(flat.view(1, *sample_shape), h[b : b + 1], backend)
            return y.reshape(-1)

        jacobian = torch.autograd.functional.jacobian(one_sample, x[b].reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        _, logdet = case(x[b : b + 1], h[b : b + 1], backend)
        assert sign.item() == 1.0
        torch.testing.assert_close(logdet[0], logabsdet, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, all_couplings(MASK_CASES, reverse=(False,))))
def test_inverse_undoes_forward(case, backend):
    x, h = case.inputs(torch.float64, seed=7)
    y, logdet = case(x, h, backend)
    inverse = dataclasses.replace(case, reverse=True)
    x_back, logdet_back = inverse(y, h, backend)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet_back, -logdet, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale, backend", [(s, b) for s in SCALES for b in CPU_BACKENDS
                                            if _dispatch.why_unsupported(b, s, "scale_shift", "half") is None])
def test_sixteen_stacked_layers_invert_in_float32(scale, backend):
    """SPEC section 3: inverse after forward, float32, 16 stacked layers, max abs error <= 1e-4."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 6, 5, 5, generator=g)
    layers = []
    for i in range(16):
        mask = "checkerboard" if i % 4 < 2 else "half"
        h_channels = 12 if mask == "checkerboard" else 6
        layers.append((mask, i % 2 == 1, 0.5 * torch.randn(4, h_channels, 5, 5, generator=g)))
    z = x
    total = torch.zeros(4)
    for mask, flip, h in layers:
        z, logdet = nf_call(z, h, mask, flip, scale, False, backend)
        total += logdet
    for mask, flip, h in reversed(layers):
        z, logdet = nf_call(z, h, mask, flip, scale, True, backend)
        total += logdet
    assert (z - x).abs().max().item() <= 1e-4
    assert total.abs().max().item() <= 1e-4


def nf_call(x, h, mask, flip, scale, reverse, backend):
    import nf_kernels

    return nf_kernels.affine_coupling(x, h, mask=mask, flip=flip, scale=scale, reverse=reverse, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_alternating_flip_transforms_every_element(backend):
    for mask in MASK_CASES:
        if not supports(backend, Coupling(mask, "exp")):
            continue
        x, _ = Coupling(mask, "exp").inputs(torch.float64)
        moved = torch.zeros_like(x, dtype=torch.bool)
        for flip in (False, True):
            case = Coupling(mask, "exp", flip=flip)
            h = case.inputs(torch.float64)[1].abs() + 0.1  # s > 0 and t > 0: every transformed element changes
            y, _ = case(x, h, backend)
            moved |= y != x
        assert moved.all(), mask
