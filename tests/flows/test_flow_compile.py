"""Compiled flows: build_model(..., compile=True) runs log_prob, forward and inverse as torch.compile(fullgraph=True)
graphs, the fused ops inside, with the values, gradients and state_dict of the eager model.

Compilation is slow on a small CPU, so these tests compile with "aot_eager" (the `aot_eager_graphs` fixture of
tests/conftest.py: Dynamo's graph capture and AOTAutograd's forward and backward graphs, everything but Inductor's
code generation) and keep models tiny; one test compiles with Inductor itself. fullgraph=True makes any graph break an error, so a passing call has none.
"""

import pytest
import torch
from flows_helpers import IMAGE_SHAPE, VECTOR_SHAPE, perturb, rel_err, tiny_sizes

from nf_kernels.flows import MODELS, build_model


def _pair(name, shape, **options):
    """The same tiny model (same seed, same perturbed weights) eager and compiled, in training mode."""
    flows = []
    for compile in (False, True):
        torch.manual_seed(0)
        flow = build_model(name, shape, backend="reference", compile=compile, **tiny_sizes(name, shape, **options))
        flows.append(perturb(flow, seed=0))
    return flows


def _loss_and_gradients(flow, x, context=None):
    loss = -flow.log_prob(x, context).mean()
    return loss.detach(), torch.autograd.grad(loss, [p for p in flow.parameters() if p.requires_grad])


# Every model on vectors and on images, and one class-conditional model (its label embedding runs before the graph).
TRAINING_CASES = [(name, shape, False) for name in MODELS for shape in (VECTOR_SHAPE, IMAGE_SHAPE)]
TRAINING_CASES += [("realnvp", IMAGE_SHAPE, True)]


@pytest.mark.parametrize("name,shape,conditional", TRAINING_CASES, ids=str)
def test_a_compiled_training_step_is_one_graph_with_the_eager_values(name, shape, conditional, aot_eager_graphs):
    eager, compiled = _pair(name, shape, num_classes=3 if conditional else None)
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    context = torch.tensor([0, 1, 2, 1]) if conditional else None
    for step in range(2):  # the first training call of Glow initializes ActNorm, eagerly; the second is compiled
        loss, grads = _loss_and_gradients(eager, x, context)
        loss_c, grads_c = _loss_and_gradients(compiled, x, context)
        torch.testing.assert_close(loss_c, loss, rtol=1e-6, atol=1e-6)
        for g, g_c in zip(grads, grads_c):
            assert rel_err(g_c, g) <= 1e-5
    assert len(aot_eager_graphs) == 1  # log_prob with gradients: one graph (fullgraph), compiled once for both steps


@pytest.mark.parametrize("name,shape", [("realnvp", VECTOR_SHAPE)] + [(name, IMAGE_SHAPE) for name in MODELS], ids=str)
def test_compiled_forward_inverse_and_sample_match_eager(name, shape, aot_eager_graphs):
    eager, compiled = (flow.eval() for flow in _pair(name, shape))
    x = torch.rand(3, *shape)
    with torch.no_grad():
        for method in ("forward", "inverse"):
            data = x if method == "forward" else eager(x)[0]
            for out, out_c in zip(getattr(eager, method)(data), getattr(compiled, method)(data)):
                torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)
        samples = [flow.sample(5, generator=torch.Generator().manual_seed(2)) for flow in (eager, compiled)]
        torch.testing.assert_close(samples[1], samples[0], rtol=1e-5, atol=1e-5)
    assert len(aot_eager_graphs) == 2  # forward, inverse (sample runs the compiled inverse)


def test_batches_of_any_size_share_one_graph(aot_eager_graphs):
    _, flow = _pair("realnvp", VECTOR_SHAPE)
    flow.eval()
    with torch.no_grad():
        for batch in (4, 7, 32, 5):
            flow.log_prob(torch.randn(batch, *VECTOR_SHAPE))
    assert len(aot_eager_graphs) == 1


def test_a_compiled_model_has_the_eager_state_dict_keys_and_loads_eager_weights(aot_eager_graphs):
    eager, compiled = _pair("glow", IMAGE_SHAPE)
    x = torch.rand(4, *IMAGE_SHAPE)
    compiled.log_prob(x)  # initialized and compiled
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." or other wrapper prefix
    eager.log_prob(x)
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x), rtol=1e-6, atol=1e-6)


def test_compile_and_memory_saving_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        build_model("realnvp", VECTOR_SHAPE, compile=True, memory_saving=True)
    flow = build_model("realnvp", VECTOR_SHAPE, compile=True)
    with pytest.raises(ValueError, match="exclude each other"):
        flow.memory_saving = True
    flow.compiled = False
    flow.memory_saving = True
    with pytest.raises(ValueError, match="exclude each other"):
        flow.compiled = True


def test_a_compiled_flow_copies_and_pickles_without_its_graphs(aot_eager_graphs):
    import copy
    import pickle

    _, flow = _pair("realnvp", VECTOR_SHAPE)
    x = torch.randn(3, *VECTOR_SHAPE)
    expected = flow.log_prob(x)
    for twin in (copy.deepcopy(flow), pickle.loads(pickle.dumps(flow))):
        assert twin.compiled
        torch.testing.assert_close(twin.log_prob(x), expected)


def test_inductor_compiles_the_fused_ops_into_a_training_step():
    """The real thing once: Inductor's generated code around the fused ops of the fastest CPU backend."""
    flows = []
    for compile in (False, True):
        torch.manual_seed(0)
        flows.append(perturb(build_model("realnvp", (4,), num_layers=2, hidden=8, depth=1, compile=compile)))
    x = torch.randn(8, 4)
    (loss, grads), (loss_c, grads_c) = (_loss_and_gradients(flow, x) for flow in flows)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-5)
    for g, g_c in zip(grads, grads_c):
        assert rel_err(g_c, g) <= 1e-5
