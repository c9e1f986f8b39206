import pytest
import torch

import respaths
from respaths.core import PARALLEL, RUN, UserError, Plan, delete_blocks, reorder_blocks, run_plan


@pytest.mark.parametrize("name", ["resnet20", "preresnet14", "plain14", "vgg15", "vgg15-nobn"])
def test_view_reproduces_model(name):
    torch.manual_seed(0)
    m = respaths.build_model(name, in_channels=1, num_classes=10, width=0.25).eval()
    x = torch.randn(3, 1, 28, 28)
    v = respaths.view(m, x)
    assert torch.equal(v(x), m(x))


def test_block_triple_and_deletion():
    torch.manual_seed(0)
    m = respaths.build_model("resnet14", in_channels=1, width=0.25).eval()
    x = torch.randn(2, 1, 28, 28)
    v = respaths.view(m, x)
    assert len(v) == 6 and [b.downsample for b in v.blocks] == [False, False, True, False, True, False]
    h = v.stem(x)
    b = v.blocks[0]
    assert torch.equal(b(h), torch.relu(h + b.branch(h)))  # post = ReLU in the original ResNet
    assert torch.equal(b.deleted(h), torch.relu(h))
    # deleting a downsampling block keeps its zero-pad shortcut, so shapes still fit
    out = v(x, delete_blocks(len(v), [2, 4]))
    assert out.shape == (2, 10)


def test_depth_and_name_errors():
    with pytest.raises(UserError, match="6n\\+2"):
        respaths.build_model("resnet21")
    with pytest.raises(UserError, match="known models"):
        respaths.build_model("resnet")


def test_plain_layers_only_deletable_where_shapes_allow():
    m = respaths.build_model("vgg15", in_channels=1, width=0.25).eval()
    v = respaths.view(m, torch.randn(1, 1, 28, 28))
    assert v.deletable == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    with pytest.raises(ValueError, match="cannot be deleted"):
        v(torch.randn(1, 1, 28, 28), delete_blocks(len(v), [4]))


def test_plans():
    p = delete_blocks(4, [2])
    assert p.key() == "r0 r1 d2 r3" and p.deleted == [2]
    assert reorder_blocks([1, 0, 2]).order == [1, 0, 2]
    with pytest.raises(ValueError):
        reorder_blocks([0, 0, 1])
    with pytest.raises(ValueError):
        delete_blocks(3, [5])


def test_plan_ops_are_an_enum_that_reads_as_strings():
    import json

    from respaths.core import DELETE, PARALLEL, RUN, Op, Plan, apply_step
    assert (RUN, DELETE, PARALLEL) == (Op.RUN, Op.DELETE, Op.PARALLEL) == ("run", "delete", "parallel")
    assert json.dumps([RUN, DELETE]) == '["run", "delete"]' and f"{PARALLEL}" == "parallel"
    # a step written with a bare string is the same step, so plan keys and tries do not change
    assert Plan((("run", 0), ("delete", 1))) == Plan(((RUN, 0), (DELETE, 1)))
    assert {("run", 0): 1}[(RUN, 0)] == 1 and delete_blocks(3, [1]).key() == "r0 d1 r2"


def test_an_unknown_op_is_refused_by_the_reference_and_the_engine():
    from respaths.core import Plan
    from respaths.engine import evaluate_plans
    torch.manual_seed(0)
    m = respaths.build_model("resnet14", in_channels=1, width=0.25).eval()
    x = torch.randn(4, 1, 28, 28)
    v = respaths.view(m, x)
    bogus = Plan((("skip", 0),) + tuple(("run", i) for i in range(1, len(v))))
    with pytest.raises(ValueError, match="unknown plan step"):
        run_plan(v, x, bogus)  # it used to be taken for a deletion
    with pytest.raises(ValueError, match="unknown plan step"):
        evaluate_plans(v, (x, torch.zeros(4, dtype=torch.long)), [bogus], batch_size=4)


def test_lesioned_model_refuses_parallel_and_unknown_steps():
    from respaths.core import PARALLEL, RUN, Plan
    from respaths.experiments.lesion import lesioned_model
    torch.manual_seed(0)
    m = respaths.build_model("resnet14", in_channels=1, width=0.25).eval()
    x = torch.randn(2, 1, 28, 28)
    n = len(respaths.view(m, x))
    parallel = Plan(((RUN, 0), (PARALLEL, (1, 3))) + tuple((RUN, i) for i in range(2, n)))
    with pytest.raises(ValueError, match="parallel"):
        lesioned_model(m, parallel, x)  # it used to turn the parallel step into a deletion
    with pytest.raises(ValueError):
        lesioned_model(m, Plan((("skip", 0),) + tuple((RUN, i) for i in range(1, n))), x)
    twin = lesioned_model(m, delete_blocks(n, [1]), x).eval()
    with torch.no_grad():
        assert torch.equal(twin(x), run_plan(respaths.view(m, x), x, delete_blocks(n, [1])))


def test_plan_keys_for_parallel_steps():
    p = Plan(((RUN, 0), (PARALLEL, (1, 2)), (RUN, 3)))
    assert p.key() == "r0 p1+2 r3" and p.deleted == []
