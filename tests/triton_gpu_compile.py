"""Compile the Triton kernels for real GPUs (sm_80, sm_90) on a machine without one.

The interpreter that runs the kernels in the CPU tests accepts things the GPU compiler rejects (and the other
way round), so this script compiles every kernel ahead of time to a cubin with Triton's own compiler: a type or
lowering error in the GPU path then fails CI even without a GPU. Run as a script with TRITON_INTERPRET unset
(tests/test_triton_gpu_compile.py does that); it prints one line per compiled variant and exits non-zero on failure.
"""

import itertools
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from nf_kernels._layout import PATTERN_CHECKERBOARD, PATTERN_GATHER, PATTERN_MASK, PATTERN_RANGE, SCALE_CODES  # noqa: E402
from nf_kernels.backends.triton_kernels.backward import _coupling_backward_kernel  # noqa: E402
from nf_kernels.backends.triton_kernels.forward import _coupling_forward_kernel, _sum_partials_kernel  # noqa: E402
from nf_kernels.backends.triton_kernels.spline_backward import _spline_backward_kernel  # noqa: E402
from nf_kernels.backends.triton_kernels.spline_forward import _spline_forward_kernel  # noqa: E402

TL_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def compile_kernel(kernel, pointers: dict, constexprs: dict, arch: int):
    """Compile `kernel` for sm_<arch>: pointer arguments get the given element types, other runtime
    arguments are 64-bit integers (the widest a launch can pass)."""
    signature = {}
    for param in kernel.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name in pointers:
            signature[param.name] = "*" + pointers[param.name]
        else:
            signature[param.name] = "i64"
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32))


def variants():
    """A covering set: every scale x dtype x direction, patterns, orders and (t, s_raw) pairs cycled through."""
    patterns = itertools.cycle([PATTERN_RANGE, PATTERN_CHECKERBOARD, PATTERN_MASK, PATTERN_GATHER])
    pairs = itertools.cycle([False, False, True])
    for scale, code in SCALE_CODES.items():
        for dtype in TL_NAMES:
            for reverse in (False, True):
                shift_first = (code + reverse) % 2 == 1
                yield scale, dtype, reverse, shift_first, next(patterns), next(pairs)


def main() -> int:
    failures = 0
    for scale, dtype, reverse, shift_first, pattern, pairs in variants():
        x_ty = TL_NAMES[dtype]
        # Mixed dtypes as autocast makes them: float32 h for bfloat16 x, and bfloat16 h for float64 x (inverse only).
        h_ty = {"bfloat16": "fp32", "float64": "bf16" if reverse else "fp64"}.get(dtype, x_ty)
        ct_name = "fp64" if dtype == "float64" else "fp32"
        ct = tl.float64 if dtype == "float64" else tl.float32
        gh_via = tl.float32 if h_ty in ("fp16", "bf16") else ct  # as backward.py rounds grad_h
        constexprs = dict(
            PATTERN=pattern, PARITY=1, SCALE=SCALE_CODES[scale], CLAMP=2.0, INV_CLAMP=0.5, CLAMP_LOW=-1.5,
            PAIRS=pairs, SHIFT_FIRST=shift_first, REVERSE=reverse, CT=ct, BLOCK=1024, ROWS=1 if reverse else 2,
        )  # fmt: skip
        mask_ty = "i32" if pattern == PATTERN_GATHER else "u8"  # a compact h's table of positions, or the bool mask
        jobs = [
            ("forward", _coupling_forward_kernel,
             dict(x_ptr=x_ty, h_ptr=h_ty, mask_ptr=mask_ty, y_ptr=x_ty, partial_ptr=ct_name), {}),
            ("backward", _coupling_backward_kernel,
             dict(grad_y_ptr=x_ty, grad_logdet_ptr=ct_name, x_ptr=x_ty, h_ptr=h_ty, mask_ptr=mask_ty,
                  grad_x_ptr=x_ty, grad_h_ptr=h_ty), dict(GH_VIA=gh_via)),
        ]  # fmt: skip
        arch = 80 if reverse else 90
        for name, kernel, pointers, extra in jobs:
            label = (f"sm_{arch} {name:<8} scale={scale:<14} x={dtype:<8} h={h_ty} reverse={reverse} pattern={pattern} "
                     f"pairs={pairs}")  # fmt: skip
            try:
                compiled = compile_kernel(kernel, pointers, dict(constexprs, **extra), arch)
                assert compiled.asm["cubin"], "no cubin"
                print("ok  ", label)
            except Exception as error:  # report every failing variant, not just the first
                failures += 1
                print("FAIL", label, f"{type(error).__name__}: {error}")
    failures += compile_spline_kernels()
    for arch, ty in ((80, "fp32"), (90, "fp64")):
        compile_kernel(_sum_partials_kernel, dict(partial_ptr=ty, out_ptr="fp32"), dict(BLOCK=256), arch)
        print("ok  ", f"sm_{arch} sum_partials {ty}")
    print(f"{failures} failed")
    return 1 if failures else 0


def spline_variants():
    """The spline kernels: every dtype x direction, the patterns cycled through, 8 bins and an odd count (5, whose
    lanes are padded to 8), each alignment the launcher picks (1 for vectors, up to 16 bytes for images), and both
    ways of reading the parameters (spline_forward.spline_launch's SPAN: 0 by lanes, a power of two by rows, as a
    vector flow's whole-sample tiles read them)."""
    patterns = itertools.cycle([PATTERN_RANGE, PATTERN_CHECKERBOARD, PATTERN_MASK])
    for dtype in TL_NAMES:
        for reverse in (False, True):
            for bins, align, span in ((8, {"float64": 2, "float32": 4}.get(dtype, 4), 0), (5, 1, 0), (5, 1, 1024)):
                yield dtype, reverse, bins, align, span, next(patterns)


def compile_spline_kernels() -> int:
    failures = 0
    for dtype, reverse, bins, align, span, pattern in spline_variants():
        x_ty = TL_NAMES[dtype]
        p_ty = {"bfloat16": "fp32"}.get(dtype, x_ty)  # autocast: a float32 conditioner output under bf16 x
        ct_name = "fp64" if dtype == "float64" else "fp32"
        ct = tl.float64 if dtype == "float64" else tl.float32
        constexprs = dict(
            PATTERN=pattern, PARITY=1, K=bins, KP=triton.next_power_of_2(bins), BOUND=3.0, MIN_W=1e-3, MIN_H=1e-3,
            MIN_D=1e-3, REVERSE=reverse, CT=ct, ALIGN=align, SPAN=span, BLOCK=256, ROWS=1 if reverse else 2,
        )  # fmt: skip
        jobs = [
            ("spline_forward", _spline_forward_kernel,
             dict(x_ptr=x_ty, params_ptr=p_ty, mask_ptr="i32", y_ptr=x_ty, partial_ptr=ct_name), {}),
            ("spline_backward", _spline_backward_kernel,
             dict(grad_y_ptr=x_ty, grad_logdet_ptr=ct_name, x_ptr=x_ty, params_ptr=p_ty, mask_ptr="i32",
                  grad_x_ptr=x_ty, grad_params_ptr=p_ty),
             dict(GP_VIA=tl.float32 if p_ty in ("fp16", "bf16") else ct)),
        ]  # fmt: skip
        arch = 80 if reverse else 90
        for name, kernel, pointers, extra in jobs:
            label = f"sm_{arch} {name:<15} x={dtype:<8} params={p_ty} reverse={reverse} bins={bins} span={span} pattern={pattern}"
            try:
                compiled = compile_kernel(kernel, pointers, dict(constexprs, **extra), arch)
                assert compiled.asm["cubin"], "no cubin"
                print("ok  ", label)
            except Exception as error:
                failures += 1
                print("FAIL", label, f"{type(error).__name__}: {error}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
