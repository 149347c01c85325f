"""What the lab's specs gained from the engine: BatchNorm, adaptive and
global pooling, LeakyReLU/ELU/GELU, AdamW/RMSprop with weight decay (optionally not on biases and
norms), a ``[scheduler]`` table, label smoothing and ``[[train.augment]]``; exact resume with all
of them on (in process and after SIGKILL); and the shipped plus experiments."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import convgrad as cg
from convgrad import nn
from convgrad.lab.checkpoint import load_checkpoint
from convgrad.lab.datasets import Datasets, dataset_geometry, load_datasets, make_loader
from convgrad.lab.metrics import MetricsLog, accuracy
from convgrad.lab.models import build_model, count_parameters
from convgrad.lab.report import training_recipe
from convgrad.lab.reproduce import suite_tasks
from convgrad.lab.runner import make_optimizer, make_scheduler, run_experiment
from convgrad.lab.spec import SpecError, builtin_names, resolve_spec, validate_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_lab_runner import assert_same_run, whole_killed_and_resumed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLUS = ["baseline-plus", "minimal-plus", "few250-plus", "fashion-baseline", "fashion-plus"]


def plus_dict(**train) -> dict:
    """A tiny spec with every new feature on: BatchNorm (2d and 1d), GELU, LeakyReLU, global
    average pooling, AdamW without decay on biases and norms, OneCycle, label smoothing and
    augmentation (random affine and erasing), on synthetic 12x12 images."""
    schedule = {"batch_size": 16, "steps": 30, "eval_every": 6, "checkpoint_every": 4,
                "eval_train_examples": 64, "eval_test_examples": 40, "label_smoothing": 0.1,
                "augment": [{"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1]},
                            {"name": "RandomErasing", "p": 0.5, "scale": [0.02, 0.1]}]}
    schedule.update(train)
    return {
        "name": "syn-plus",
        "seed": 3,
        "dataset": {"kind": "synthetic", "train": 200, "test": 120, "height": 12, "width": 12,
                    "noise": 0.5},
        "model": {"layers": [
            {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": "same",
             "bias": False},
            {"type": "batchnorm"}, {"type": "gelu"}, {"type": "maxpool"},
            {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": "same"},
            {"type": "batchnorm", "momentum": 0.2}, {"type": "leaky_relu", "negative_slope": 0.1},
            {"type": "global_avgpool"}, {"type": "linear", "out_features": 12},
            {"type": "batchnorm"}, {"type": "elu"}, {"type": "dropout", "p": 0.2},
            {"type": "linear"},
        ]},
        "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.05,
                      "decay_bias_and_norm": False},
        "scheduler": {"kind": "onecycle"},
        "train": schedule,
    }


# ------------------------------------------------------------------------------ the schema
@pytest.mark.parametrize(
    "path, value, message",
    [
        (("model", "layers", 1, "momentum"), 0.0,
         r"model\.layers\[1\]\.momentum: .*greater than 0"),
        (("model", "layers", 1, "eps"), -1.0, r"model\.layers\[1\]\.eps: .*greater than 0"),
        (("model", "layers", 2, "approximate"), "fast",
         r"model\.layers\[2\]\.approximate: Input should be 'none' or 'tanh'"),
        (("model", "layers", 6, "negative_slope"), True,
         r"model\.layers\[6\]\.negative_slope: expected a number, received true"),
        (("model", "layers", 7, "size"), 2, r"model\.layers\[7\]\.size: unknown key"),
        (("optimizer", "weight_decay"), -0.1, r"optimizer\.weight_decay: .*greater than or equal"),
        (("optimizer", "decay_bias_and_norm"), "no", r"optimizer\.decay_bias_and_norm: .*bool"),
        (("optimizer", "name"), "adagrad",
         r"optimizer\.name: expected one of .*'adamw'.*'rmsprop'"),
        (("optimizer", "momentum"), 0.9, r"optimizer\.momentum: unknown key"),
        (("scheduler", "kind"), "cyclic", r"scheduler\.kind: expected one of .*'onecycle'"),
        (("scheduler", "pct_start"), 1.0, r"scheduler\.pct_start: .*less than 1"),
        (("scheduler", "total_steps"), 10,
         r"scheduler\.total_steps: expected at least train\.steps=30 .*received 10"),
        (("scheduler", "base_momentum"), 0.99,
         r"scheduler\.base_momentum: expected at most max_momentum=0\.95"),
        (("scheduler", "T_max"), 5, r"scheduler\.T_max: unknown key"),
        (("train", "label_smoothing"), 1.5,
         r"train\.label_smoothing: .*less than or equal to 1"),
        (("train", "augment", 0, "name"), "RandomFlip",
         r"train\.augment\[0\]: unknown transform name='RandomFlip'"),
        (("train", "augment", 1, "p"), 2.0,
         r"train\.augment\[1\]: RandomErasing: expected p in \[0, 1\]"),
        (("train", "augment", 0, "angle"), 3,
         r"train\.augment\[0\]: RandomAffine has no argument 'angle'"),
        (("train", "augment"), {"name": "RandomAffine"}, r"train\.augment: .*valid list"),
    ],
)
def test_each_new_key_is_validated_with_a_message_naming_it(path, value, message):
    data = plus_dict()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(SpecError, match=message):
        validate_spec(data)


@pytest.mark.parametrize(
    "scheduler, message",
    [
        ({"kind": "multistep", "milestones": [5, 5]},
         r"scheduler\.milestones: .*strictly increasing"),
        ({"kind": "step"}, r"scheduler\.step_size: Field required"),
        ({"kind": "exponential"}, r"scheduler\.gamma: Field required"),
        ({"kind": "linear", "start_factor": 0.0}, r"scheduler\.start_factor: .*greater than 0"),
    ],
)
def test_scheduler_kinds_check_their_own_arguments(scheduler, message):
    with pytest.raises(SpecError, match=message):
        validate_spec({**plus_dict(), "scheduler": scheduler})


def test_an_augment_table_must_name_a_transform_and_its_required_keys():
    with pytest.raises(SpecError, match=r"train\.augment\[0\]: expected a table with a 'name'"):
        validate_spec(plus_dict(augment=[{"degrees": 3}]))
    with pytest.raises(SpecError, match=r"train\.augment\[0\]: RandomAffine needs the key "
                                        r"'degrees'"):
        validate_spec(plus_dict(augment=[{"name": "RandomAffine"}]))
    with pytest.raises(SpecError, match=r"train\.augment\[0\]: .*valid dictionary"):
        validate_spec(plus_dict(augment=["RandomAffine"]))


def test_sgd_nesterov_needs_momentum():
    data = plus_dict()
    data["optimizer"] = {"name": "sgd", "lr": 0.1, "nesterov": True}
    with pytest.raises(SpecError, match=r"optimizer\.nesterov: expected momentum > 0"):
        validate_spec(data)


# ------------------------------------------------------------------------------ models
def test_new_layers_build_with_their_types_and_options():
    cg.manual_seed(0)
    model = build_model(validate_spec(plus_dict()).model, (1, 12, 12), 10)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Conv2d", "BatchNorm2d", "GELU", "MaxPool2d", "Conv2d", "BatchNorm2d",
                     "LeakyReLU", "Sequential", "Linear", "BatchNorm1d", "ELU", "Dropout",
                     "Linear"]
    assert model[5].momentum == 0.2 and model[6].negative_slope == 0.1
    assert [type(m).__name__ for m in model[7]] == ["AdaptiveAvgPool2d", "Flatten"]
    assert model[1].num_features == 6 and model[9].num_features == 12
    out = model(cg.tensor(np.zeros((3, 1, 12, 12), dtype=np.float32)))
    assert out.shape == (3, 10)
    # the running statistics are buffers: in the state dict, so checkpoints carry them
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(
        model.state_dict())


def test_adaptive_pooling_and_a_misplaced_layer():
    data = plus_dict()
    data["model"]["layers"][7] = {"type": "adaptive_maxpool", "output_size": [2, 1]}
    data["model"]["layers"].insert(8, {"type": "flatten"})
    cg.manual_seed(0)
    model = build_model(validate_spec(data).model, (1, 12, 12), 10)
    assert type(model[7]).__name__ == "AdaptiveMaxPool2d" and model[9].in_features == 16
    data = plus_dict()
    data["model"]["layers"].insert(0, {"type": "flatten"})
    data["model"]["layers"].insert(1, {"type": "global_avgpool"})
    with pytest.raises(SpecError, match=r"model\.layers\[1\]: global_avgpool expects \(N, C, "
                                        r"H, W\) input, the layers before give \(1, 144\)"):
        build_model(validate_spec(data).model, (1, 12, 12), 10)


def test_weight_decay_groups_and_the_optimizer_kinds():
    spec = validate_spec(plus_dict())
    cg.manual_seed(0)
    model = build_model(spec.model, (1, 12, 12), 10)
    optimizer = make_optimizer(spec, model)
    assert type(optimizer) is cg.optim.AdamW
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert all(p.ndim <= 1 for p in plain["params"])  # biases and BatchNorm's weight and bias
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    data = plus_dict()
    data["optimizer"] = {"name": "rmsprop", "lr": 1e-3, "alpha": 0.9, "momentum": 0.5,
                         "weight_decay": 1e-4}
    rms = make_optimizer(validate_spec(data), model)
    assert type(rms) is cg.optim.RMSprop and len(rms.param_groups) == 1
    assert rms.param_groups[0]["alpha"] == 0.9 and rms.param_groups[0]["weight_decay"] == 1e-4
    data["optimizer"] = {"name": "adamw"}
    assert make_optimizer(validate_spec(data), model).param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize(
    "scheduler, torch_name, arguments",
    [
        ({"kind": "onecycle"}, "OneCycleLR", {"max_lr": 1e-2, "total_steps": 30}),
        ({"kind": "onecycle", "max_lr": 0.05, "total_steps": 40, "anneal_strategy": "linear"},
         "OneCycleLR", {"max_lr": 0.05, "total_steps": 40, "anneal_strategy": "linear"}),
        ({"kind": "cosine", "eta_min": 1e-4}, "CosineAnnealingLR", {"T_max": 30,
                                                                   "eta_min": 1e-4}),
        ({"kind": "step", "step_size": 7, "gamma": 0.5}, "StepLR", {"step_size": 7,
                                                                   "gamma": 0.5}),
        ({"kind": "multistep", "milestones": [5, 20]}, "MultiStepLR", {"milestones": [5, 20]}),
        ({"kind": "exponential", "gamma": 0.9}, "ExponentialLR", {"gamma": 0.9}),
        ({"kind": "linear", "start_factor": 0.25, "total_iters": 10}, "LinearLR",
         {"start_factor": 0.25, "total_iters": 10}),
    ],
)
def test_the_scheduler_table_gives_torchs_learning_rates(scheduler, torch_name, arguments):
    torch = pytest.importorskip("torch")
    spec = validate_spec({**plus_dict(), "scheduler": scheduler})
    cg.manual_seed(0)
    model = build_model(spec.model, (1, 12, 12), 10)
    ours = make_scheduler(spec, optimizer := make_optimizer(spec, model))
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    bias = torch.nn.Parameter(torch.zeros(2))
    reference_optimizer = torch.optim.AdamW(
        [{"params": [weight]}, {"params": [bias], "weight_decay": 0.0}], lr=1e-2,
        weight_decay=0.05)
    reference = getattr(torch.optim.lr_scheduler, torch_name)(reference_optimizer, **arguments)
    for _ in range(30):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            reference_optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        assert optimizer.param_groups[0]["betas"][0] == pytest.approx(
            reference_optimizer.param_groups[0]["betas"][0], rel=1e-12)
        optimizer.step()
        reference_optimizer.step()
        ours.step()
        reference.step()


def test_the_augmentation_reaches_the_training_loader_only():
    spec = validate_spec(plus_dict())
    data = load_datasets(spec.dataset)
    plain = make_loader(data, 16, seed=3)
    augmented = make_loader(data, 16, seed=3, augment=spec.train.augment)
    images, labels = plain.next_batch()
    changed, same_labels = augmented.next_batch()
    assert np.array_equal(labels, same_labels) and not np.array_equal(images, changed)
    assert augmented.transform is not None and plain.transform is None
    fresh = Datasets(data.train, data.test, 10, (1, 12, 12), fresh_base=data.train)
    with pytest.raises(SpecError, match=r"train\.augment: not supported with "
                                        r"dataset\.sampling = \"fresh\""):
        make_loader(fresh, 16, seed=3, augment=spec.train.augment)


# ------------------------------------------------------------------------------ the runner
def test_all_of_it_resumes_bit_identically_in_process(tmp_path):
    spec = validate_spec(plus_dict())
    assert run_experiment(spec, tmp_path / "whole", progress=False).ok
    assert run_experiment(spec, tmp_path / "parts", stop_after=9, progress=False).status == (
        "stopped")
    assert run_experiment(spec, tmp_path / "parts", resume=True, stop_after=21,
                          progress=False).status == "stopped"
    assert run_experiment(spec, tmp_path / "parts", resume=True, progress=False).ok
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
    records = MetricsLog(tmp_path / "whole" / "metrics.jsonl").read()
    # the one-cycle schedule moved the learning rate, logged at each evaluation
    rates = [r["lr"] for r in records]
    assert max(rates) == pytest.approx(1e-2, rel=0.05) and rates[-1] < 1e-4
    assert rates[0] < rates[1]  # warm-up
    # the whole run's final weights, evaluated without augmentation, give its test accuracy
    cg.manual_seed(0)
    data = load_datasets(spec.dataset)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    model.load_state_dict(load_checkpoint(tmp_path / "whole", warn=lambda line: None)[1])
    assert accuracy(model, np.asarray(data.test.images), np.asarray(data.test.labels)) == (
        records[-1]["test_acc"])


def test_label_smoothing_and_augmentation_change_the_run(tmp_path):
    final = {}
    for label, changes in (("all", {}), ("no-smoothing", {"label_smoothing": 0.0}),
                           ("no-augment", {"augment": []})):
        run_dir = tmp_path / label
        run_experiment(validate_spec(plus_dict(steps=6, **changes)), run_dir, progress=False)
        final[label] = MetricsLog(run_dir / "metrics.jsonl").read()[-1]["train_loss"]
    assert final["all"] != final["no-smoothing"] and final["all"] != final["no-augment"]


def test_a_run_long_schedule_fixes_the_step_count_on_resume(tmp_path):
    run_experiment(validate_spec(plus_dict()), tmp_path / "a", stop_after=8, progress=False)
    with pytest.raises(SpecError, match=r"differs.*\(in train\); only train\.keep_checkpoints "
                                        r"may change \(the scheduler's length is train\.steps\)"):
        run_experiment(validate_spec(plus_dict(steps=40)), tmp_path / "a", resume=True,
                       progress=False)
    # a step schedule does not depend on the run's length: more steps may be asked
    data = {**plus_dict(), "scheduler": {"kind": "step", "step_size": 5}}
    run_experiment(validate_spec(data), tmp_path / "b", stop_after=8, progress=False)
    data["train"]["steps"] = 36
    assert run_experiment(validate_spec(data), tmp_path / "b", resume=True, progress=False).ok
    with pytest.raises(SpecError, match=r"differs.*\(in scheduler\)"):
        run_experiment(validate_spec({**plus_dict(), "scheduler": None}), tmp_path / "a",
                       resume=True, progress=False)


def test_a_scheduler_argument_and_a_scheduler_table_are_not_both_taken(tmp_path):
    with pytest.raises(SpecError, match=r"\[scheduler\] table \(onecycle\) and a scheduler "
                                        r"argument"):
        run_experiment(validate_spec(plus_dict()), tmp_path, progress=False,
                       scheduler=lambda optimizer: None)
    assert not any(tmp_path.iterdir())


PLUS_TOML = """
name = "syn-plus"
seed = 3

[dataset]
kind = "synthetic"
train = 400
test = 120
height = 28
width = 28
noise = 0.5

[model]
layers = [
    { type = "conv2d", out_channels = 8, kernel_size = 3, padding = "same", bias = false },
    { type = "batchnorm" },
    { type = "relu" },
    { type = "maxpool" },
    { type = "conv2d", out_channels = 8, kernel_size = 3, padding = "same", bias = false },
    { type = "batchnorm" },
    { type = "relu" },
    { type = "global_avgpool" },
    { type = "linear", out_features = 16 },
    { type = "batchnorm" },
    { type = "relu" },
    { type = "dropout", p = 0.3 },
    { type = "linear" },
]

[optimizer]
name = "adamw"
lr = 1e-2
weight_decay = 0.05
decay_bias_and_norm = false

[scheduler]
kind = "onecycle"

[train]
batch_size = 16
steps = 120
eval_every = 10
checkpoint_every = 3
eval_train_examples = 64
eval_test_examples = 40
label_smoothing = 0.1

[[train.augment]]
name = "RandomAffine"
degrees = 10
translate = [0.1, 0.1]
scale = [0.9, 1.1]

[[train.augment]]
name = "RandomErasing"
p = 0.5
"""


def test_sigkill_and_resume_with_everything_on_matches_an_uninterrupted_run(tmp_path):
    spec_path = tmp_path / "syn-plus.toml"
    spec_path.write_text(PLUS_TOML)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src")}
    whole_killed_and_resumed(spec_path, tmp_path, env)
    stored = load_scheduler_state(tmp_path / "killed")
    assert stored["last_epoch"] == 120  # the schedule was checkpointed and resumed with the run


def load_scheduler_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir, warn=lambda line: None)[0]["scheduler"]


def test_the_report_shows_the_recipe_and_the_learning_rate(tmp_path):
    spec = validate_spec(plus_dict(steps=12))
    run_experiment(spec, tmp_path, progress=False)
    text = training_recipe(spec.model_dump(mode="json"),
                           MetricsLog(tmp_path / "metrics.jsonl").read())
    assert "Optimizer: adamw lr 0.01, weight decay 0.05 (not on biases and norms)" in text
    assert "schedule: onecycle; label smoothing 0.1" in text  # defaults are not listed
    changed = {**spec.model_dump(mode="json"), "scheduler": {"kind": "step", "step_size": 5,
                                                            "gamma": 0.1}}
    assert "schedule: step (step_size 5);" in training_recipe(changed, [])
    assert "augmentation: RandomAffine, RandomErasing" in text
    assert "learning rate at each evaluation: " in text and "(step 12)" in text


# ------------------------------------------------------------------------------ shipped specs
@pytest.mark.parametrize("name", PLUS)
def test_each_plus_spec_validates_and_builds_its_model(name):
    spec = resolve_spec(name)
    assert spec.protocol == "validation" and spec.seeds == [0, 1, 2]
    assert spec.report.section == "beyond"
    assert spec.steps_for("quick") < spec.steps_for("standard") < spec.steps_for("full")
    shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, shape, classes)
    parameters = count_parameters(model)
    assert parameters == nn.summary(model, (1, *shape)).trainable_params
    if spec.max_params is not None:
        assert parameters <= spec.max_params
    for budget in ("quick", "standard", "full"):
        # every budget gives a valid spec (OneCycle spans the budget's own steps)
        resized = spec.with_overrides(budget=budget)
        optimizer = make_optimizer(resized, model)
        scheduler = make_scheduler(resized, optimizer)
        assert scheduler is None or scheduler.total_steps == resized.train.steps


def test_minimal_plus_has_at_most_5000_parameters():
    spec = resolve_spec("minimal-plus")
    cg.manual_seed(0)
    model = build_model(spec.model, (1, 28, 28), 10)
    assert spec.max_params == 5000
    assert count_parameters(model) == 4806


def test_fashion_specs_use_fashion_mnist_and_differ_from_the_mnist_ones_only_in_data():
    fashion, mnist = resolve_spec("fashion-plus"), resolve_spec("baseline-plus")
    assert fashion.dataset.kind == "fashion-mnist"
    assert fashion.model == mnist.model and fashion.optimizer == mnist.optimizer
    assert resolve_spec("fashion-baseline").model == resolve_spec("baseline").model


def test_reproduce_quick_lists_the_plus_experiments_in_order_with_one_seed(tmp_path):
    names = builtin_names()
    assert [n for n in names if n in PLUS] == PLUS
    assert names.index("digit-sum-plus") < names.index("baseline-plus")
    tasks = suite_tasks("quick", tmp_path)
    listed = [task.spec.name for task in tasks]
    assert [n for n in dict.fromkeys(listed) if n in PLUS] == PLUS
    for name in PLUS:
        (task,) = [t for t in tasks if t.spec.name == name]  # quick_seeds = 1: seed 0 only
        assert task.spec.seed == 0 and task.run_dir == tmp_path / name / "seed-0"
        assert task.spec.train.steps == resolve_spec(name).steps_for("quick")
        assert task.spec.train.steps // task.spec.train.eval_every <= 4
    standard = [t.spec.name for t in suite_tasks("standard", tmp_path, names=PLUS)]
    assert standard == [name for name in PLUS for _ in range(3)]


def test_quick_seeds_and_evaluations_change_only_the_smaller_budgets():
    data = copy.deepcopy(plus_dict(steps=100, eval_every=5))
    data.update(seeds=[0, 1, 2], budget={"quick": 20, "evaluations": 2, "quick_seeds": 2})
    spec = validate_spec(data)
    quick = spec.with_overrides(budget="quick")
    assert quick.seeds == [0, 1] and quick.train.eval_every == 10
    assert spec.with_overrides(budget="standard").seeds == [0, 1, 2]
    assert spec.with_overrides(budget="full").train.eval_every == 5


def test_tensorboard_shows_the_scheduled_learning_rate(tmp_path):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    assert run_experiment(validate_spec(plus_dict(steps=18)), tmp_path, progress=False,
                          tensorboard=True).ok
    board = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    board.Reload()
    logged = [(event.step, event.value) for event in board.Scalars("lr")]
    expected = [(r["step"], r["lr"]) for r in MetricsLog(tmp_path / "metrics.jsonl").read()]
    assert [step for step, _ in logged] == [step for step, _ in expected] == [6, 12, 18]
    assert [value for _, value in logged] == pytest.approx([lr for _, lr in expected], rel=1e-6)
    assert len({lr for _, lr in expected}) == 3  # the schedule moved it
