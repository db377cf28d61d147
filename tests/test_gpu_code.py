"""The compiled-code check: what the fused kernels compile to for an H200 (sm_90 SASS), read on this GPU-less
machine by nf_kernels.benchmarking.gpu_code, held to three rules for every main kernel (not the log-det sum):

(a) every global load and store is 128-bit, except a program's own scalars (its log-det partial, grad_logdet[b]);
(b) no 64-bit integer division or remainder, no spill;
(c) at least 4 elements per thread in a launch of >= 2^20 elements (vector flows included).

The first tests pin the SASS parser and the rules on small inputs. The rest run the report once, in a subprocess
without TRITON_INTERPRET (it compiles for the GPU), and check each (kernel, problem group, rule). What today's
kernels break is marked xfail(strict=True, raises=RuleBroken): a fix makes its case pass, and strictness makes it
drop the marker; any other error (no rows, a crash) still fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from nf_kernels.benchmarking import gpu_code  # imports no Triton at module level: safe under the interpreter

# One process runs this module (README's test command: --dist loadgroup), so its report fixture is built once, and
# tests/test_triton_gpu_compile.py after or before it, not beside it.
pytestmark = pytest.mark.xdist_group("gpu_compile")

ROOT = pathlib.Path(__file__).resolve().parents[1]


class RuleBroken(AssertionError):
    """A kernel breaks a rule: the only failure an xfail case below expects."""


# ----------------------------------------------------------------------------------------------------------------
# The parser and the rules, on small inputs.
# ----------------------------------------------------------------------------------------------------------------

# nvdisasm -c -ndf output (tabs and long lines as nvdisasm writes them), cut down from two real listings: Triton's bf16 checkerboard forward for sm_90 (a spill
# around the 64-bit remainder's call, the subroutine in the kernel's own section) and an nvcc kernel of
# csrc/cuda/coupling_kernels.cu (64-bit, byte and 16-bit accesses); the LTC128B line is an Ampere cache hint.
SASS = r"""
	.headerflags	@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_ACCELERATORS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
	.elftype	@"ET_EXEC"


//--------------------- .text._coupling_forward_kernel --------------------------
	.section	.text._coupling_forward_kernel,"ax",@progbits
	.sectionflags	@"SHF_BARRIERS=1"
	.align	128
        .global         _coupling_forward_kernel
        .type           _coupling_forward_kernel,@function
        .size           _coupling_forward_kernel,(.L_x_1 - _coupling_forward_kernel)
        .other          _coupling_forward_kernel,@"STO_CUDA_ENTRY STV_DEFAULT"
_coupling_forward_kernel:
.text._coupling_forward_kernel:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0040*/                   ULDC.64 UR6, c[0x0][0x210] ;
        /*04a0*/                   STL [R1], R2 ;
        /*0440*/              @!P5 LDG.E.128 R40, desc[UR8][R2.64] ;
        /*0460*/              @!P4 LDG.E.128 R36, desc[UR8][R6.64] ;
        /*12c0*/               @P6 LDG.E.U16 R111, desc[UR8][R80.64] ;
        /*0d00*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_rem_s64) ;
        /*0d50*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_rem_s64) ;
        /*2a40*/                   LDL.LU R91, [R1] ;
        /*2b50*/                   MUFU.EX2 R89, R88 ;
        /*2bf0*/                   MUFU.EX2 R90, R49 ;
        /*4cf0*/              @!P3 STG.E.128 desc[UR8][R24.64], R12 ;
        /*4de0*/                   STG.E desc[UR8][R2.64], R5 ;
        /*4f30*/              @!P1 EXIT ;
        .weak           $__internal_0_$__cuda_sm20_rem_s64
        .type           $__internal_0_$__cuda_sm20_rem_s64,@function
        .size           $__internal_0_$__cuda_sm20_rem_s64,(.L_x_1 - $__internal_0_$__cuda_sm20_rem_s64)
$__internal_0_$__cuda_sm20_rem_s64:
        /*4fb0*/                   UIADD3 UR4, UP1, URZ, -UR7, URZ ;
        /*5000*/                   I2F.U64.RP R100, UR4 ;
        /*5010*/                   MUFU.RCP R100, R100 ;
        /*5430*/                   RET.REL.NODEC R100 `(_coupling_forward_kernel) ;
.L_x_0:
        /*5440*/                   BRA `(.L_x_0);
        /*5450*/                   NOP;
.L_x_1:
//--------------------- .text._ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv --------------------------
	.section	.text._ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv,"ax",@progbits
_ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv:
.text._ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv:
        /*2990*/              @!P2 LDG.E.64 R32, desc[UR8][R70.64+0x10] ;
        /*1250*/              @!P4 LDG.E.U8 R16, desc[UR8][R20.64] ;
        /*0770*/               @P0 LDG.E.LTC128B.128 R12, desc[UR8][R20.64] ;
        /*0bc0*/                   STG.E.U16 desc[UR8][R34.64], R11 ;
        /*4f40*/                   STG.E.64 desc[UR8][R34.64], R40 ;
        /*0510*/                   CALL.REL.NOINC `($__internal_1_$__cuda_sm20_rcp_rn_f32_slowpath) ;
        /*19730*/                   I2F.U64.RP R10, R2 ;
        /*04c0*/                   MUFU.RCP64H R3, R6 ;
.L_x_7:
        /*1830*/                   BRA `(.L_x_7);


//--------------------- SYMBOLS --------------------------

	.type		.nv.reservedSmem.offset0,@object
	.section	.nv.constant0._coupling_forward_kernel,"a",@progbits
"""

RESOURCE_USAGE = """
Resource usage:
 Common:
  GLOBAL:0
 Function _coupling_forward_kernel:
  REG:128 STACK:8 SHARED:1024 LOCAL:0 CONSTANT[0]:616 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv:
  REG:40 STACK:0 SHARED:32 LOCAL:0 CONSTANT[2]:12 CONSTANT[0]:712 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_parser_splits_kernels_from_their_subroutines():
    functions = gpu_code.parse_nvdisasm(SASS)
    assert sorted(functions) == ["_ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv", "_coupling_forward_kernel"]
    triton = functions["_coupling_forward_kernel"]
    assert len(triton.body) == 14
    assert list(triton.subroutines) == ["$__internal_0_$__cuda_sm20_rem_s64"]
    # The branch label .L_x_0 stays in the subroutine; .L_x_1 (its end) adds nothing.
    assert [i.opcode for i in triton.subroutines["$__internal_0_$__cuda_sm20_rem_s64"]] == [
        "UIADD3", "I2F.U64.RP", "MUFU.RCP", "RET.REL.NODEC", "BRA", "NOP",
    ]  # fmt: skip
    assert triton.body[3].predicate == "@!P5" and triton.body[3].opcode == "LDG.E.128"


def test_access_widths_read_whole_modifiers_only():
    def bits(opcode):
        return gpu_code.access_bits(gpu_code.Instruction(opcode, ""))

    assert [bits(o) for o in ["LDG.E.128", "LDG.E", "LDG.E.64", "LDG.E.U16", "LDG.E.U8", "STG.E.U16"]] == [
        128, 32, 64, 16, 8, 16,
    ]  # fmt: skip
    assert bits("LDG.E.LTC128B.128") == 128 and bits("LDG.E.LTC128B") == 32  # a cache hint is not a width


def test_code_stats_of_the_snippet():
    functions = gpu_code.parse_nvdisasm(SASS)
    triton = gpu_code.code_stats(functions["_coupling_forward_kernel"])
    assert triton.loads == {128: 2, 16: 1} and triton.stores == {128: 1, 32: 1}
    assert triton.div64 == 2  # two calls; the subroutine's own I2F.U64.RP is not a third
    assert (triton.spill_stores, triton.spill_loads) == (1, 1)
    assert triton.mufu == {"EX2": 2}  # the subroutine's MUFU.RCP is integer-division machinery, not element math
    assert triton.calls == {"rem_s64": 2}
    assert gpu_code.CodeStats.share_128(triton.loads) == pytest.approx(2 / 3)
    cuda = gpu_code.code_stats(functions["_ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv"])
    assert cuda.loads == {128: 1, 64: 1, 8: 1} and cuda.stores == {64: 1, 16: 1}
    assert cuda.div64 == 1  # an inlined 64-bit division; the f32 reciprocal's slow path is not one
    assert cuda.calls == {"rcp_rn_f32_slowpath": 1} and cuda.mufu == {"RCP64H": 1} and cuda.spills == 0


# `nvdisasm -gi` line information (cut down from a real listing of csrc/cuda/coupling_kernels.cu): each block of
# frames, innermost first, applies to the instructions after it until the next block.
LINE_INFO_SASS = """
//--------------------- .text._ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv --------------------------
	.section	.text._ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv,"ax",@progbits
_ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv:
.text._ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
	//## File "/usr/local/cuda-13.0/bin/../targets/x86_64-linux/include/sm_32_intrinsics.hpp", line 125 inlined at "/r/csrc/cuda/coupling_kernels.cu", line 221
	//## File "/r/csrc/cuda/coupling_kernels.cu", line 221 inlined at "/r/csrc/cuda/coupling_kernels.cu", line 494
	//## File "/r/csrc/cuda/coupling_kernels.cu", line 494
        /*0dc0*/                   LDG.E.64.CONSTANT R44, desc[UR10][R44.64] ;
        /*0dd0*/                   LDG.E.64.CONSTANT R46, desc[UR10][R44.64+0x8] ;
.L_x_3:
	//## File "/r/csrc/cuda/coupling_kernels.cu", line 376
        /*0de0*/              @!P0 STG.E desc[UR10][R2.64], R7 ;
	//## File "/usr/local/cuda-13.0/bin/../targets/x86_64-linux/include/sm_32_intrinsics.hpp", line 401
        /*0df0*/                   STG.E.128 desc[UR10][R4.64], R8 ;
"""


def test_parser_reads_source_lines_through_inlining():
    function = gpu_code.parse_nvdisasm(LINE_INFO_SASS)["_ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv"]
    # The innermost frame in the project's csrc/, not the CUDA header of __ldg; a frame with none stays itself.
    assert [i.source for i in function.body] == [
        "", "csrc/cuda/coupling_kernels.cu:221", "csrc/cuda/coupling_kernels.cu:221", "csrc/cuda/coupling_kernels.cu:376",
        "sm_32_intrinsics.hpp:401",
    ]  # fmt: skip
    assert gpu_code.code_stats(function).narrow == [
        dict(kind="loads", opcode="LDG.E.64.CONSTANT", source="csrc/cuda/coupling_kernels.cu:221", sites=2),
        dict(kind="stores", opcode="STG.E", source="csrc/cuda/coupling_kernels.cu:376", sites=1),
    ]  # fmt: skip


def test_resource_usage():
    usage = gpu_code.parse_resource_usage(RESOURCE_USAGE)
    assert usage["_coupling_forward_kernel"]["REG"] == 128 and usage["_coupling_forward_kernel"]["STACK"] == 8
    assert usage["_ZN10nf_kernels4cuda23coupling_forward_kernelIffEEvv"]["SHARED"] == 32


def test_programs_per_sm():
    # Registers are allocated per warp in units of 256: 113 -> 120 a thread, 3840 a warp, 17 warps of 64 K.
    assert gpu_code.programs_per_sm(113, 8, 1024, 90) == 2
    assert gpu_code.programs_per_sm(142, 8, 1024, 90) == 1
    assert gpu_code.programs_per_sm(40, 8, 0, 90) == 6
    assert gpu_code.programs_per_sm(16, 4, 1024, 90) == 16  # warps bound it: 64 / 4
    assert gpu_code.programs_per_sm(16, 1, 0, 90) == 32  # the block limit
    assert gpu_code.programs_per_sm(32, 4, 100 * 1024, 80) == 1  # shared memory (164 KB on sm_80)


def test_slots_per_thread_from_the_largest_tensor():
    ttgir = "%4 = tt.splat %3 : !tt.ptr<f32> -> tensor<4096x!tt.ptr<f32>, #blocked>\n%5 = tensor<4096xi64, #b>"
    assert gpu_code.slots_per_thread(ttgir, 256) == 16
    assert gpu_code.slots_per_thread("tensor<8x64xf32, #blocked>", 128) == 4  # packed samples count too
    assert gpu_code.slots_per_thread("tensor<64xf32, #blocked>", 128) == 1  # fewer elements than threads


def _row(**changes) -> gpu_code.Row:
    """A main Triton forward row that meets every rule; `changes` break some."""
    stats = dict(loads={128: 12}, stores={128: 4, 32: 1}, div64=0, spill_stores=0, spill_loads=0, mufu={}, calls={})
    stats.update(changes.pop("stats", {}))
    row = dict(backend="triton", kernel="_coupling_forward_kernel", family="_coupling_forward_kernel",
               group="image-half", variant="v", arch=90, main=True, registers=40, warps=8, shared_bytes=0,
               programs_per_sm=6, stats=gpu_code.CodeStats(**stats), elements=2**21, grid=512,
               elements_per_thread=16.0)  # fmt: skip
    row.update(changes)
    return gpu_code.Row(**row)


def test_rules_pass_a_good_row_and_name_what_a_bad_one_breaks():
    assert gpu_code.rule_failures(_row()) == {}
    assert set(gpu_code.rule_failures(_row(stats=dict(stores={128: 4, 32: 2})))) == {"a"}  # one scalar too many
    assert set(gpu_code.rule_failures(_row(stats=dict(loads={128: 8, 64: 1})))) == {"a"}  # no scalar loads here
    assert set(gpu_code.rule_failures(_row(stats=dict(div64=1)))) == {"b"}
    assert set(gpu_code.rule_failures(_row(stats=dict(spill_stores=1)))) == {"b"}
    assert set(gpu_code.rule_failures(_row(local_bytes=8))) == {"b"}
    assert set(gpu_code.rule_failures(_row(elements_per_thread=2.0))) == {"c"}
    assert gpu_code.rule_failures(_row(elements_per_thread=2.0, elements=2**20 - 1)) == {}  # a small launch
    assert gpu_code.rule_failures(_row(main=False, stats=dict(div64=3))) == {}  # the log-det sum is not checked
    backward = _row(kernel="_coupling_backward_kernel", family="_coupling_backward_kernel",
                    stats=dict(loads={128: 12, 32: 1}, stores={128: 12}))  # fmt: skip
    assert gpu_code.rule_failures(backward) == {}  # grad_logdet[b]


def test_cuda_own_scalars_are_the_marked_log_det_lines():
    """The lines exempt from rule (a) are the forward's log-det stores and the backward's grad_logdet[b] load."""
    lines = sorted(gpu_code.own_scalar_lines(), key=lambda line: int(line.rsplit(":", 1)[1]))
    source = gpu_code.CUDA_SOURCE.read_text().splitlines()
    code = [source[int(line.rsplit(":", 1)[1]) - 1].split("//")[0].strip() for line in lines]
    assert all(line.startswith("csrc/cuda/coupling_kernels.cu:") for line in lines)
    assert len(code) == 3, code
    assert code[0].startswith("static_cast<CT*>(args.logdet)[b] = ") and code[1].startswith("partials[item] = ")
    assert "args.grad_logdet)[b]" in code[2]


def test_cuda_spline_own_scalars_are_its_log_det_lines():
    """The spline kernels' exempt lines: the forward's log-det and chunk partial stores, the backward's
    grad_logdet[b] load; the report exempts the marked lines of every CUDA source it reads."""
    lines = sorted(gpu_code.own_scalar_lines(gpu_code.SPLINE_CUDA_SOURCE),
                   key=lambda line: int(line.rsplit(":", 1)[1]))
    source = gpu_code.SPLINE_CUDA_SOURCE.read_text().splitlines()
    code = [source[int(line.rsplit(":", 1)[1]) - 1].split("//")[0].strip() for line in lines]
    assert all(line.startswith("csrc/cuda/spline_kernels.cu:") for line in lines)
    assert len(code) == 3, code
    assert code[0].startswith("logdet[") and code[1].startswith("partials[") and "args.grad_logdet)[" in code[2]
    assert set(lines) | gpu_code.own_scalar_lines() == gpu_code.cuda_own_scalar_lines()


def test_cuda_sources_and_their_launch_geometry():
    assert [source.stem for source in gpu_code.CUDA_SOURCES] == ["coupling_kernels", "spline_kernels"]
    assert gpu_code.kernel_family("spline_backward_kernel<float, half, true>") == "spline_backward_kernel"
    assert gpu_code.kernel_family("spline_sum_partials_kernel<float>") == ""
    # The spline kernels' last template argument is kReverse: both are checked, neither is a fallback.
    assert not gpu_code.is_cuda_fallback("spline_forward_kernel<float, float, false>")
    assert gpu_code.is_cuda_fallback("coupling_forward_kernel<float, float, false>")
    # The coupling launchers: one wave (here 2 blocks an SM on 132 SMs), 4 float elements a thread an iteration.
    coupling = gpu_code.coupling_geometry("float", 2, gpu_code.IMAGE, 132)
    assert (coupling.grid, coupling.threads, coupling.per_iteration) == (264, 256, 4)
    # The spline launchers: a block for each 1024-element chunk of a sample, whatever the occupancy; samples of up
    # to 128 elements a team of lanes each (64 elements: 16 lanes, 16 samples a block).
    image = gpu_code.spline_geometry("float", 6, gpu_code.IMAGE, 132)
    assert (image.grid, image.threads, image.per_iteration) == (256 * 6, 256, 1)
    assert gpu_code.spline_geometry("half", 6, gpu_code.VECTOR, 132).grid == 65536 // 16
    assert gpu_code.spline_geometry("float", 6, (1000, 129), 132).grid == 1000  # a chunk a sample
    assert gpu_code.spline_geometry("float", 6, (1000, 128), 132).grid == 125  # 32 lanes, 8 samples a block
    assert gpu_code.spline_geometry("float", 6, (1000, 3), 132).grid == 4  # a lane a sample


def test_check_cuda_compiles_with_the_build_flags():
    """.ci/check_cuda.sh's objects stand in for this module's own nvcc build in CI: the same flags, which are the
    extension build's, or the SASS read here would not be the build's."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    from nf_kernels import _build

    script = (ROOT / ".ci" / "check_cuda.sh").read_text()
    listed = re.search(r"BUILD_FLAGS=\(([^)]*)\)", script).group(1).split()
    assert listed == gpu_code.NVCC_FLAGS
    assert '"${BUILD_FLAGS[@]}"' in script
    assert set(_build.NVCC_FLAGS + COMMON_NVCC_FLAGS) <= set(gpu_code.NVCC_FLAGS)


def test_cuda_objects_are_matched_to_their_sources_by_kernel_names(tmp_path):
    coupling = tmp_path / "built.o"  # any name: the old `--cuda-object BUILT.o` of the coupling kernels
    coupling.write_bytes(b"\x7fELF _ZN10nf_kernels4cuda23coupling_forward_kernelIffLb1EEEvv")
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "x.o").write_bytes(b"\x7fELF _ZN10nf_kernels4cuda21spline_forward_kernelIffLb0EEEvv")
    assert gpu_code.assign_cuda_objects([coupling, folder]) == {"coupling_kernels": coupling,
                                                                "spline_kernels": folder / "x.o"}  # fmt: skip
    assert gpu_code.assign_cuda_objects([]) == {}
    with pytest.raises(RuntimeError, match="two objects"):
        gpu_code.assign_cuda_objects([coupling, coupling])
    (folder / "other.o").write_bytes(b"\x7fELF nothing of ours")
    with pytest.raises(RuntimeError, match="0 of the CUDA sources"):
        gpu_code.assign_cuda_objects([folder])


def _cuda_vector_row(**stats) -> gpu_code.Row:
    return _row(backend="cuda", kernel="coupling_forward_kernel<float, float, true>", family="coupling_forward_kernel",
                group="", stats=stats, launches=[dict(problem="image fp32", elements=2**21, per_thread=8.0)])  # fmt: skip


def test_cuda_rule_a_exempts_the_marked_lines_only():
    own = sorted(gpu_code.own_scalar_lines())[0]
    site = dict(kind="stores", opcode="STG.E", source=own, sites=5)
    assert gpu_code.rule_failures(_cuda_vector_row(stores={128: 20, 32: 5}, narrow=[site])) == {}
    # The same narrow stores on another line, or without line information, break it, and the report names them.
    elsewhere = dict(site, source="csrc/cuda/coupling_kernels.cu:1")
    why = gpu_code.rule_failures(_cuda_vector_row(stores={128: 20, 32: 5}, narrow=[elsewhere]))["a"]
    assert "5x STG.E at csrc/cuda/coupling_kernels.cu:1" in why
    assert "without a source line" in gpu_code.rule_failures(_cuda_vector_row(stores={128: 20, 32: 5}))["a"]
    # One narrow load more than the marked sites: a mask byte on an unmarked line.
    mask = dict(kind="loads", opcode="LDG.E.U8", source="csrc/cuda/coupling_kernels.cu:222", sites=1)
    assert set(gpu_code.rule_failures(_cuda_vector_row(loads={128: 9, 8: 1}, stores={128: 20, 32: 5},
                                                       narrow=[site, mask]))) == {"a"}  # fmt: skip


def test_cuda_rules_check_each_problem_class_and_exempt_only_the_fallback():
    launches = [dict(problem="image fp32", elements=2**21, per_thread=8.0),
                dict(problem="vector fp32", elements=2**22, per_thread=0.25)]  # fmt: skip
    cuda = _row(backend="cuda", kernel="coupling_forward_kernel<float, float, true>",
                family="coupling_forward_kernel", group="", stats=dict(stores={32: 3}), launches=launches)  # fmt: skip
    checks = {(c.rule, c.group): c.ok for c in gpu_code.rule_checks(cuda)}
    assert checks == {("a", "all"): False, ("b", "all"): True, ("c", "image"): True, ("c", "vector"): False}
    # The element-by-element instantiation (kVector = false) is exempt from rule (a) only.
    fallback = dataclasses.replace(cuda, kernel="coupling_forward_kernel<float, float, false>")
    checks = {(c.rule, c.group): c.ok for c in gpu_code.rule_checks(fallback)}
    assert checks[("a", "all")] and not checks[("c", "vector")]
    assert gpu_code.kernel_family("coupling_forward_kernel<float, float, false>") == "coupling_forward_kernel"


# ----------------------------------------------------------------------------------------------------------------
# The report on today's kernels.
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("gpu_code") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "nf_kernels.benchmarking.gpu_code", "--arch", "90", "--json", str(out)]
    prebuilt = os.environ.get("NF_KERNELS_TEST_CUDA_OBJECTS")
    if prebuilt:
        # .ci/check_cuda.sh built these already, with the same flags (test_check_cuda_compiles_with_the_build_flags).
        objects = sorted(pathlib.Path(prebuilt).glob("*.o"))
        assert len(objects) == len(gpu_code.CUDA_SOURCES), f"NF_KERNELS_TEST_CUDA_OBJECTS={prebuilt} holds {objects}"
        command += ["--cuda-object", prebuilt]
    elif gpu_code.nvcc() is None:
        command.append("--no-cuda")
    # nvcc's ptxas is the slow part: with the peers' scale maps every CUDA kernel has 12 scale instantiations, and
    # on a busy 2-core machine one sm_90 pass took over 10 minutes; a timeout here would fail CI for no defect.
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


# Triton's rules for a runtime argument (triton/runtime/jit.py create_function_from_signature and the native
# specialize_impl, checked against Triton 3.6): ints equal to 1 become constants, other ints are i32 when they fit
# (i64, then u64, when not), and pointers and ints divisible by 16 get tt.divisibility=16; an int the kernel marks
# do_not_specialize gets neither.
_TRITON_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16",
                  "torch.float64": "fp64", "torch.uint8": "u8", "torch.int16": "i16", "torch.int32": "i32"}  # fmt: skip


def expected_specialization(arguments: dict) -> str:
    parts = []
    for name, value in arguments.items():
        if "pointer" in value:
            divisible = value["address_mod_256"] % 16 == 0
            parts.append(f"{name}:*{_TRITON_DTYPES[value['pointer']]}{'/16' if divisible else ''}")
        elif "float" in value or "bool" in value:  # never specialized
            parts.append(f"{name}:{'fp32' if 'float' in value else 'u1'}")
        elif value.get("not_specialized"):  # do_not_specialize: only its width
            parts.append(f"{name}:{'i32' if -(2**31) <= value['int'] < 2**31 else 'i64'}")
        elif value["int"] == 1:
            parts.append(f"{name}=1")
        else:
            v = value["int"]
            kind = "i32" if -(2**31) <= v < 2**31 else "i64" if -(2**63) <= v < 2**63 else "u64"
            parts.append(f"{name}:{kind}{'/16' if v % 16 == 0 else ''}")
    return " ".join(parts)


def _triton_main_rows(report):
    return [row for row in report["rows"] if row["backend"] == "triton" and row["main"]]


def test_triton_specialized_each_launch_by_its_own_rules(report):
    rows = [row for row in report["rows"] if row["backend"] == "triton"]
    assert rows
    for row in rows:
        assert row["specialization"] == expected_specialization(row["arguments"]), row["id"]


def test_sass_and_ptx_agree_on_64_bit_division(report):
    """A second reading of rule (b): the PTX has 64-bit div/rem exactly where the SASS calls or inlines one."""
    for row in report["rows"]:
        if row["backend"] == "triton":
            assert (row["stats"]["div64"] > 0) == (row["ptx_div64"] > 0), row["id"]


def test_the_launches_are_the_representative_problems(report):
    rows = _triton_main_rows(report)
    covered = {(row["group"], row["variant"].split()[-1]) for row in rows}
    groups = {p.group for p in gpu_code.problems()}
    assert covered == {(g, d) for g in groups for d in ("forward", "inverse", "backward")}
    for row in rows:
        batch = int(row["variant"].split()[1].split("x")[0])
        assert row["arguments"]["N"]["int"] * batch == row["elements"] >= gpu_code.LARGE_LAUNCH, row["id"]


TRITON_FORWARD, TRITON_BACKWARD = "_coupling_forward_kernel", "_coupling_backward_kernel"
CUDA_FORWARD, CUDA_BACKWARD = "coupling_forward_kernel", "coupling_backward_kernel"

# Why today's kernels break a rule, {case: reason} (what the report shows for sm_90; docs/gpu_code_before.md has the
# numbers of the kernels before the fixes). Every affine and additive kernel, Triton and CUDA, passes every rule, and
# so does the Triton spline forward; the Triton spline backward of a vector flow does not, nor do the CUDA spline
# kernels where marked below.
TRITON_SPLINE_FORWARD, TRITON_SPLINE_BACKWARD = "_spline_forward_kernel", "_spline_backward_kernel"
XFAILS: dict[tuple[str, str, str, str], str] = {
    ("triton", TRITON_SPLINE_BACKWARD, "vector-half", "a"): (
        "2 elements a thread: x, grad_y and grad_x are 64-bit (the parameters are read and written by rows, "
        "128-bit: spline_params.py)"
    ),
    ("triton", TRITON_SPLINE_BACKWARD, "vector-half", "c"): (
        "2 elements a thread: with 4, reading the parameters by rows spills (spline_forward.BACKWARD_LEAST_BY_ROWS)"
    ),
}

CUDA_SPLINE_FORWARD, CUDA_SPLINE_BACKWARD = "spline_forward_kernel", "spline_backward_kernel"
_CUDA_SPLINE_ACCESSES = ("one element a thread an iteration, kThreads apart: x, y and each of an element's 23 "
                         "parameters move in accesses of one element (32-bit for float, 16 or 64 for the others), "
                         "the bool mask a byte; <float, float, false> forward: 21 of 21 loads, 2 of 4 stores (2 own "
                         "scalars) narrow")  # fmt: skip
XFAILS.update({
    ("cuda", CUDA_SPLINE_FORWARD, "all", "a"): _CUDA_SPLINE_ACCESSES,
    ("cuda", CUDA_SPLINE_BACKWARD, "all", "a"): _CUDA_SPLINE_ACCESSES,
})

TRITON_GROUPS = ("image-half", "image-checkerboard", "image-bool", "vector-half")
CASES = [("triton", kernel, group, rule)
         for kernel in (TRITON_FORWARD, TRITON_BACKWARD, TRITON_SPLINE_FORWARD, TRITON_SPLINE_BACKWARD)
         for group in TRITON_GROUPS for rule in "abc"]  # fmt: skip
CASES += [("cuda", kernel, group, rule)
          for kernel in (CUDA_FORWARD, CUDA_BACKWARD, CUDA_SPLINE_FORWARD, CUDA_SPLINE_BACKWARD)
          for group, rule in (("all", "a"), ("all", "b"), ("image", "c"), ("vector", "c"))]  # fmt: skip


def _param(case):
    marks = []
    if case in XFAILS:
        marks.append(pytest.mark.xfail(strict=True, raises=RuleBroken, reason=XFAILS[case]))
    return pytest.param(*case, id="-".join(case), marks=marks)


@pytest.mark.parametrize("backend, kernel, group, rule", [_param(case) for case in CASES])
def test_main_kernel_rule(report, backend, kernel, group, rule):
    if backend == "cuda" and not report["cuda"]:
        pytest.skip("nvcc not found: the CUDA kernels were not compiled")
    checks = [(row["id"], check) for row in report["rows"] if row["backend"] == backend and row["family"] == kernel
              for check in row["checks"] if check["group"] == group and check["rule"] == rule]  # fmt: skip
    assert checks, f"the report has no rows of {backend} {kernel} {group} for rule {rule}"
    broken = [f"{row_id}: {check['why']}" for row_id, check in checks if not check["ok"]]
    if broken:
        raise RuleBroken(f"rule ({rule}) {gpu_code.RULES[rule]}; {len(broken)} of {len(checks)} rows break it:\n"
                         + "\n".join(broken))  # fmt: skip


def test_every_cuda_fallback_has_its_vector_twin(report):
    """Rule (a) exempts the element-by-element instantiations only because each has a vector twin it checks."""
    if not report["cuda"]:
        pytest.skip("nvcc not found: the CUDA kernels were not compiled")
    names = {row["kernel"] for row in report["rows"] if row["backend"] == "cuda" and row["main"]}
    fallbacks = [name for name in names if gpu_code.is_cuda_fallback(name)]
    assert len(fallbacks) == 32, sorted(names)  # forward and backward, 4 x dtypes, 4 h dtypes
    assert all(name[: name.rfind("false")] + "true>" in names for name in fallbacks)


def test_every_check_of_the_report_is_a_case(report):
    """A new kernel family or problem group must be added to CASES (and meet the rules or be marked)."""
    present = {(row["backend"], row["family"], check["group"], check["rule"])
               for row in report["rows"] for check in row["checks"]}  # fmt: skip
    assert present <= set(CASES), sorted(present - set(CASES))
    assert {row["family"] for row in report["rows"] if row["main"]} >= {TRITON_FORWARD, TRITON_BACKWARD}
