"""Bad input gets a clear error (issue #27): every public function and class of mllib, called with
values its declared constraints reject and with the generic bad values a student passes (None, a
string, NaN, +-inf, an empty tensor, a tensor of the wrong rank, a float where an int belongs),
raises ValueError or TypeError naming the argument, within a time limit.

The walk reads the constraints each function declares (``mllib.constraints.constrain`` keeps them
on ``__constraints__``); good values for the other arguments come from ``example`` (derived from
each constraint) and ``INSTANCES``. A public callable without declared constraints must be listed
in ``EXEMPT`` with its reason. ``test_summary`` prints the counts (``pytest -s`` or ``-rA``).
"""
import importlib
import inspect
import math
import pkgutil
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib.constraints import Either, Function, Instance, Integer, OneOf, Optional, Real, Reals, Tensor
from timeouts import time_limit

NAN, INF = float("nan"), float("inf")
TIME_LIMIT_S = 10  # per call: a bad argument must be refused, not run
GENERIC = [None, "text", NAN, INF, -INF, 2.5, torch.zeros(0), torch.zeros(2, 2, 2, 2, 2, 2), [1.0, "a"]]

OPTIONAL = {"flwr": "flower", "nbgrader": "instructor", "psutil": "instructor"}  # package: the extra it comes with
RUNS_ON_IMPORT = {"mllib.flower.__main__": "python -m mllib.flower: importing it runs a federation"}


def module_names() -> list[str]:
    """Every module of mllib, found by walking the package: a new module is walked unlisted."""
    found = [m.name for m in pkgutil.walk_packages(mllib.__path__, "mllib.") if m.name not in RUNS_ON_IMPORT]
    return ["mllib", *found]


def optional_missing(name: str) -> str | None:
    """The extra a module needs when its optional package is missing here, else None (importorskip's rule)."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as missing:
        package = (missing.name or getattr(missing.__cause__, "name", None) or "").split(".")[0]
        if package in OPTIONAL:
            return f"needs the {OPTIONAL[package]} extra ({package} is not installed)"
        raise
    return None


SKIPPED = {name: why for name in module_names() if (why := optional_missing(name))}
MODULES = [name for name in module_names() if name not in SKIPPED]

FIGURE = "draws a figure of results computed and checked elsewhere"
MESSAGE = "a protocol message the parties build, not a caller"
PER_STEP = "runs per step or round inside a declared public function, which checked its arguments once"
REFERENCE = "a self-check's reference answer or fixture, called by the check with its own cases"
CHECKING = "the self-check machinery: a check calls it with its reference, cases and tolerances"
CONSTRAINTS = "the checker itself: it builds the constraints the library declares"
FLOWER = "called by Flower's runtime with its own Message, Context, Grid or records, not by a user"
SECAGG_RESULT = "reads a finished SecAgg+ run with its SecAggPlusSettings, which declares the numbers"
RUNNER = "a step of the distributed runner, given a RunConfig whose constraints checked the numbers"
TOOL = "an instructor's tool (make labs/release/grade/site/readings/update): paths, notebooks, text, git"
COMMAND_LINE = "a command-line entry point: argparse checks its arguments"


def within(module: str, names: str, reason: str) -> dict:
    """EXEMPT entries for the space-separated ``names`` of ``module``, all for one reason."""
    return {f"{module}.{name}": reason for name in names.split()}

EXEMPT = {
    "mllib.History": "the engine's record, built by engine.run",
    "mllib.compression.lecture.LowRankRow": "a record built by lecture.low_rank_comparison",
    "mllib.Dataset": "a record built by mllib.load",
    "mllib.Clients": "a record built by mllib.split",
    "mllib.device": "takes no arguments",
    "mllib.privacy.RefusedRequest": "an exception type",
    "mllib.compression.Compressor": "an abstract base class",
    **{f"mllib.privacy.{name}": MESSAGE for name in (
        "AdvertiseKeys", "EncryptedShares", "ForwardedShares", "MaskedInput", "PublicKeys", "UnmaskRequest",
        "UnmaskResponse")},  # fmt: skip
    **dict.fromkeys((
        "mllib.adversarial.plot_attack", "mllib.automl.plot_anytime", "mllib.automl.plot_zero_order",
        "mllib.compression.lecture.plot_accuracy_vs_bits", "mllib.compression.lecture.plot_sweep",
        "mllib.federated.plot_drift", "mllib.numerics.bit_table", "mllib.personalized.plot_collaboration",
        "mllib.personalized.plot_linear_collaboration", "mllib.playground.plot",
        "mllib.privacy.plot_clip_noise", "mllib.privacy.plot_reconstructions", "mllib.privacy.plot_tradeoff",
        "mllib.systems.sampling_figure", "mllib.systems.selection_explorer", "mllib.systems.selection_figure",
    ), FIGURE),  # fmt: skip
    "mllib.robust.Grid": "a record built by robust.attack_grid",
    "mllib.adversarial.AttackGrid": "a record built by adversarial.attack_grid",
    "mllib.automl.CurveTable": "a record built by automl.learning_curves",
    "mllib.robust.check_rows": "the check itself (X and f are what it checks), run by every round's aggregator",
    "mllib.personalized.TransferCurve": "a record built by personalized.transfer_curve",
    "mllib.personalized.LinearCollaboration": "a record built by personalized.linear_collaboration",
    "mllib.privacy.MembershipResult": "a record built by membership_experiment",
    "mllib.privacy.InversionResult": "a record built by inversion_experiment",
    "mllib.introduction.AloneVsPooled": "a record built by introduction.alone_vs_pooled",
    "mllib.data.Quadratics": "a record built by data.quadratics",
    "mllib.robust.rules.check_f": "the check itself (f and n are what it checks), run by every robust aggregator",
    "mllib.numerics.formats.names_of_formats": "builds a Rule for the declarations of numerics",
    "mllib.compression.ddp.SGDSteps": "a DDP worker's training loop, built by run_ddp (declared)",
    "mllib.flower.deploy.Deployment": "the SuperLink and SuperNodes that deploy.main and secaggplus.run start",
    "mllib.flower.secaggplus.run": "starts a SecAgg+ deployment; its SecAggPlusSettings declares the numbers",
    "mllib.flower.secaggplus.SecAggHalted": "an exception type",
    "mllib.claims.claim": "checks a lecture's measured number against its declared bounds, as the claim says",
    **within("mllib.claims", "declaration_file bounds", "reads a notebook's claim declarations (a path, a dict)"),
    **within("mllib.automl.meta", "sinusoid_tasks sinusoid_batch adapt", PER_STEP),
    **within("mllib.automl.nas", "train_epochs", PER_STEP),
    **within("mllib.models", "per_client_loss loss_gradient", PER_STEP),
    **within("mllib.numerics.fast_rounding", "by_bits by_magic_number nearest_by_bits nearest_by_magic_number "
                                              "nearest_integer", PER_STEP),  # fmt: skip
    **within("mllib.numerics.training", "mlp_logits", PER_STEP),
    **within("mllib.privacy.dp", "clip_factors", PER_STEP),
    **within("mllib.robust.attacks", "samples_of", PER_STEP),
    **within("mllib.robust.rules", "max_f", PER_STEP),
    **within("mllib.runtime", "rand randn", PER_STEP),
    **within("mllib.systems.hetero", "select", PER_STEP),
    **within("mllib.decentralized.distributed", "exchange Exchange", PER_STEP),
    **within("mllib.automl.widgets", "plot_adaptation", FIGURE),
    **within("mllib.decentralized.plots", "plot_topology node_positions", FIGURE),
    **within("mllib.introduction", "plot_label_counts plot_alone_vs_pooled", FIGURE),
    **within("mllib.robust.figures", "plot_points plot_grid plot_groups", FIGURE),
    **within("mllib.widgets", "png slider_gallery", FIGURE),
    **within("mllib.checks", "Mistake self_check run_answer Modified problem_with explain difference describe",
             CHECKING),  # fmt: skip
    **within("mllib.checks.adversarial", "TinyClassifier FGSMAttack reference_fgsm reference_pgd "
                                          "reference_adversarial_epoch", REFERENCE),  # fmt: skip
    **within("mllib.checks.automl", "Quadratic", REFERENCE),
    **within("mllib.checks.compression", "reference_ef_sgd", REFERENCE),
    **within("mllib.checks.decentralized", "reference_metropolis_gossip", REFERENCE),
    **within("mllib.checks.federated", "quadratic_fedavg_round quadratic_scaffold_round", REFERENCE),
    **within("mllib.checks.numerics", "reference_stochastic_round_to_format", REFERENCE),
    **within("mllib.checks.personalized", "reference_ditto_round", REFERENCE),
    **within("mllib.checks.privacy", "reference_dp_sgd loss_threshold_auc_reference", REFERENCE),
    **within("mllib.checks.systems", "reference_gap_working_sets", REFERENCE),
    **within("mllib.constraints", "shown Either Optional Real Integer Instance Tensor Indices ClientMatrix Rule "
                                  "every_entry converted", CONSTRAINTS),  # fmt: skip
    **within("mllib.decentralized.distributed", "dataset build build_mixing node worker", RUNNER),
    "mllib.decentralized.distributed.parse": COMMAND_LINE,
    **within("mllib.flower.client_app", "kept update train", FLOWER),
    **within("mllib.flower.records", "to_tensor to_record", FLOWER),
    **within("mllib.flower.secaggplus", "Trainer CountingGrid RecordedSecAggPlus RecordedFedAvg main local_part",
             FLOWER),  # fmt: skip
    **within("mllib.flower.secaggplus", "quantization_tolerance plain_average quantization_gap", SECAGG_RESULT),
    **within("mllib.flower.server_app", "SuperNodes main", FLOWER),
    "mllib.flower.deploy.main": COMMAND_LINE,
    **within("mllib.grading", "course_config lab_names is_check source_notebook check_modules takes_seed "
                              "hidden_calls generate release which_lab find_submissions Result autograde_one "
                              "run_with_limit kill_tree scores known_cells_only failures grade_submission grade "
                              "write_grades", TOOL),  # fmt: skip
    "mllib.grading.main": COMMAND_LINE,
    **within("mllib.labs", "strip_solutions has_region check_imports checks_called first_definition "
                           "grading_metadata lock grading_source record digest make_lab is_as_generated beside "
                           "write_lab", TOOL),  # fmt: skip
    "mllib.labs.main": COMMAND_LINE,
    **within("mllib.readings", "load link reading_cell questions_cell cells write", TOOL),
    **within("mllib.site", "title slide_metadata estimated_height markdown_height outputs_height widget_height "
                           "wrapped_lines png_size course_metadata apply_course_metadata copy_assets copy_into "
                           "offline build_site", TOOL),  # fmt: skip
    **within("mllib.update", "git text changes sources only_ran upstream update", TOOL),
    "mllib.update.main": COMMAND_LINE,
}


def public_callables():
    """(qualified name, object) of every public function and class: a module's ``__all__``, or
    for a module without one, the public callables it defines or imports from itself. An object
    a package re-exports is walked once, under its first (shortest) name."""
    found, seen = {}, set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n, v in vars(module).items() if not n.startswith("_")
                     and getattr(v, "__module__", "").startswith(module_name)]  # fmt: skip
        for name in names:
            value = getattr(module, name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and id(value) not in seen:
                seen.add(id(value))
                found[f"{module_name}.{name}"] = value
    return found


PUBLIC = public_callables()


def target(obj):
    """What is called and carries the constraints: the function, or a class's ``__init__``."""
    return obj.__init__ if inspect.isclass(obj) else obj


def parameters(obj) -> dict:
    params = dict(inspect.signature(target(obj)).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


# ------------------------------------------------------------------------------ good values
def _small_world():
    gen = mllib.generator(0)
    data = mllib.load("digits", gen=gen)
    return data, mllib.split(data, 4, gen=gen)


DATA, CLIENTS = _small_world()
MODEL = mllib.FlatModel(mllib.mlp(64, 10, hidden=(8,)))


def instance_of(classes: tuple):
    """An instance for an ``Instance`` constraint."""
    from mllib.automl import SGD
    from mllib.compression import ScaledSign
    from mllib.decentralized import Gossip
    from mllib.numerics import FORMATS, FloatFormat, Precision
    from mllib import federated, playground
    from mllib.data import Quadratics
    from mllib.flower.task import Settings
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from mllib.distributed import RunConfig
    from mllib.privacy import FixedPoint, SecureAggregation
    from mllib.systems import CostModel

    makers = {torch.Generator: lambda: torch.Generator().manual_seed(0), mllib.FlatModel: lambda: MODEL,
              mllib.Clients: lambda: CLIENTS, mllib.Dataset: lambda: DATA, torch.nn.Module: lambda: mllib.mlp(4, 2),
              tuple: tuple, list: list, range: lambda: range(2), str: str, slice: lambda: slice(0, 1),
              SGD: lambda: SGD(0.1), Gossip: lambda: Gossip(torch.eye(4)), float: lambda: 0.5, dict: dict}  # fmt: skip
    makers |= {ScaledSign: ScaledSign, Precision: Precision, FloatFormat: lambda: FORMATS["bf16"]}
    makers |= {bytes: lambda: bytes(32), X25519PrivateKey: X25519PrivateKey.generate,
               X25519PublicKey: lambda: X25519PrivateKey.generate().public_key(),
               FixedPoint: lambda: FixedPoint(1.0, 8), SecureAggregation: lambda: SecureAggregation(3, 2, 2, bound=1.0),
               CostModel: CostModel, RunConfig: RunConfig}  # fmt: skip
    makers |= {mllib.engine.Decentralized: lambda: mllib.engine.Decentralized(
        torch.zeros(2, 2), local=lambda X: X, combine=lambda X, M, r: X)}  # fmt: skip
    makers |= {Quadratics: lambda: Quadratics(torch.eye(2).repeat(2, 1, 1), torch.zeros(2, 2)),
               federated.QuadraticProblem: lambda: federated.scalar_quadratics(torch.ones(2), torch.zeros(2)),
               federated.DataProblem: lambda: federated.DataProblem(MODEL, CLIENTS, 2), mllib.History: mllib.History,
               federated.FedAvg: lambda: federated.FedAvg(local_steps=1, lr=0.1), playground.Config: playground.Config,
               Settings: Settings}  # fmt: skip
    for cls in classes:
        for known, make in makers.items():
            if isinstance(cls, type) and issubclass(known, cls):
                return make()
    raise LookupError(f"no example instance of {classes}; add one to instance_of")


def example(constraint):
    """A value the constraint accepts."""
    if isinstance(constraint, Optional):
        return None
    if isinstance(constraint, Either):
        return example(constraint.first)
    if isinstance(constraint, Real):
        low = constraint.gt if constraint.gt is not None else constraint.ge
        high = constraint.lt if constraint.lt is not None else constraint.le
        if low is not None and high is not None:
            return (low + high) / 2
        return low + 1.0 if low is not None else high - 1.0 if high is not None else 0.5
    if isinstance(constraint, Integer):
        return constraint.min if constraint.min is not None else constraint.max if constraint.max is not None else 1
    if isinstance(constraint, Reals):
        return (example(constraint.each),) * 2
    if isinstance(constraint, OneOf):
        return constraint.options[0]
    if isinstance(constraint, Function):
        return lambda *args, **kwargs: None
    if isinstance(constraint, Tensor):
        rank = constraint.ndim[0] if constraint.ndim else 1
        dtype = torch.bool if constraint.boolean else torch.int64 if constraint.integer else torch.float32
        return torch.ones([2] * rank, dtype=dtype)
    if isinstance(constraint, Instance):
        return instance_of(constraint.classes)
    raise LookupError(f"no example for {constraint!r}")


def rejects(constraint, value) -> bool:
    try:
        constraint.check("value", value)
    except (TypeError, ValueError):
        return True
    return False


def cases():
    """(function name, argument, bad value) for every declared constraint."""
    out = []
    for qualified, obj in PUBLIC.items():
        declared = getattr(target(obj), "__constraints__", None)
        for name, constraint in (declared or {}).items():
            bad = constraint.bad_values() + [v for v in GENERIC if rejects(constraint, v)]
            seen = set()
            for value in bad:
                key = repr(value) if not isinstance(value, torch.Tensor) else f"tensor{tuple(value.shape)}"
                if key not in seen:
                    seen.add(key)
                    out.append((qualified, name, value))
    return out


CASES = cases()


def call_with(obj, argument: str, value):
    """Call obj with good values everywhere but ``argument``, which gets ``value``."""
    declared = target(obj).__constraints__
    if inspect.isabstract(obj):  # an abstract base checks its arguments for its subclasses
        obj = type(obj.__name__, (obj,), dict.fromkeys(obj.__abstractmethods__, lambda *args, **kwargs: None))
    args, kwargs = [], {}
    for name, p in parameters(obj).items():
        if name == argument:
            good = value
        elif name in declared:
            good = example(declared[name])
        elif p.default is not p.empty:
            continue
        else:
            good = None  # never reached: the checks refuse the bad argument before the body runs
        if p.kind is p.POSITIONAL_ONLY:
            args.append(good)
        else:
            kwargs[name] = good
    return obj(*args, **kwargs)


# ------------------------------------------------------------------------------ the walk
def test_every_public_callable_declares_constraints_or_is_exempt_with_a_reason():
    undeclared = [q for q, obj in PUBLIC.items() if not hasattr(target(obj), "__constraints__")
                  and q not in EXEMPT and parameters(obj)]  # fmt: skip
    assert not undeclared, f"declare constraints (mllib.constraints.constrain) or exempt with a reason: {undeclared}"
    stale = [q for q in EXEMPT if q in PUBLIC and hasattr(target(PUBLIC[q]), "__constraints__")]
    assert not stale, f"declared now, remove from EXEMPT: {stale}"


@pytest.mark.parametrize(("function", "argument", "value"), CASES, ids=[f"{f}-{a}-{i}" for i, (f, a, _) in enumerate(CASES)])
def test_a_bad_argument_gets_a_clear_error_naming_it(function, argument, value):
    with time_limit(TIME_LIMIT_S), pytest.raises((TypeError, ValueError)) as raised:
        call_with(PUBLIC[function], argument, value)
    first_line = str(raised.value).splitlines()[0]
    assert re.match(rf"{re.escape(argument)}\b", first_line), first_line


@pytest.mark.parametrize("function", sorted(q for q, o in PUBLIC.items() if hasattr(target(o), "__constraints__")))
def test_the_example_values_pass_each_constraint(function):
    """The good values the walk uses are good: else a case would fail on the wrong argument."""
    for name, constraint in target(PUBLIC[function]).__constraints__.items():
        constraint.check(name, example(constraint))


def test_summary(capsys):
    declared = [q for q, o in PUBLIC.items() if hasattr(target(o), "__constraints__")]
    exempt = [q for q in PUBLIC if q in EXEMPT]
    no_arguments = [q for q, o in PUBLIC.items() if not parameters(o) and q not in EXEMPT and q not in declared]
    with capsys.disabled():
        print(f"\nbad-input walk: {len(PUBLIC)} public functions and classes; {len(declared)} declare constraints "
              f"({len(CASES)} bad calls); {len(exempt)} exempt; {len(no_arguments)} without arguments; "
              f"{len(MODULES)} modules walked, skipped: {SKIPPED or 'none'}")  # fmt: skip
    assert len(declared) + len(exempt) + len(no_arguments) == len(PUBLIC)


# ------------------------------------------------------------------------------ the examples
def raises(error, pattern, call):
    with time_limit(TIME_LIMIT_S), pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("sigma", [NAN, INF])
def test_compute_rdp_refuses_a_sigma_that_would_never_end(sigma):
    from mllib.privacy import compute_rdp

    raises(ValueError, f"^sigma must be a finite number > 0, got {sigma}", lambda: compute_rdp(q=0.5, sigma=sigma, steps=1))


def test_hyperband_and_search_refuse_infinite_budgets():
    from mllib import automl

    raises(TypeError, "^max_resource must be an integer >= 1, got inf", lambda: automl.hyperband_schedule(INF))
    curves = torch.rand(4, 9, generator=mllib.generator(0))
    for budget in (INF, 1e15):  # 1e15 epochs would replay for ages
        raises(ValueError, r"^budget must be a finite number in \[1, 10000\], got",
               lambda: automl.search_trace("hyperband", curves, torch.arange(4), budget, torch.Generator()))
        raises(ValueError, r"^budget must be a finite number in \[1, 10000\], got",
               lambda: automl.random_search(curves, torch.arange(4), budget, torch.Generator()))


def test_integer_matrices_are_mixed_as_floats_and_integer_dtypes_refused():
    from mllib.decentralized import gossip, mixing_matrix

    X = torch.arange(12).view(4, 3)  # int64
    W = mixing_matrix("ring", 4)
    assert torch.equal(gossip(X, W), gossip(X.float(), W)) and gossip(X, W).abs().sum() > 0
    raises(ValueError, "^dtype must be one of", lambda: mixing_matrix("ring", 4, dtype=torch.int64))


def test_secure_aggregation_refuses_nan_inputs_and_clients_that_do_not_exist():
    from mllib.privacy import FixedPoint, SecureAggregation

    raises(ValueError, "^x must be finite, got nan", lambda: FixedPoint(1.0, 4).encode(torch.tensor([0.5, NAN])))
    protocol = SecureAggregation(4, 3, 5, bound=1.0, gen=torch.Generator().manual_seed(0))
    raises(ValueError, r"^among must hold client indices in \[0, 4\), got \[9\]", lambda: protocol.advertise_keys(among=[9]))


def test_an_aggregate_of_the_wrong_shape_is_named():
    raises(ValueError, r"^aggregate <lambda> must return a tensor of shape \(650,\)",
           lambda: mllib.run_rounds(mllib.FlatModel(mllib.logistic_regression(64, 10)), CLIENTS, rounds=1, local_steps=1,
                                    lr=0.1, batch_size=4, gen=mllib.generator(0), aggregate=lambda U: U))  # fmt: skip


def test_nan_statistics_are_refused():
    from mllib.personalized import optimal_weight
    from mllib.privacy import membership_auc
    from mllib.systems import check_probabilities

    raises(ValueError, "^member_losses must be", lambda: membership_auc(torch.tensor([0.1, NAN]), torch.tensor([0.2])))
    raises(ValueError, "^member_losses must be", lambda: membership_auc(torch.tensor([]), torch.tensor([0.2])))
    raises(ValueError, "^var_own must be", lambda: optimal_weight(NAN, 10, 1.0, 10, 0.0))
    raises(ValueError, "^p must be a distribution with finite entries", lambda: check_probabilities(torch.tensor([0.5, NAN])))


def test_truncated_svd_refuses_a_negative_rank():
    from mllib.compression import truncated_svd

    raises(ValueError, "^rank must be an integer >= 1, got -1", lambda: truncated_svd(torch.eye(3), rank=-1))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_refuse_a_nan_radius(attack):
    from mllib import adversarial

    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    raises(ValueError, "^eps must be", lambda: getattr(adversarial, attack)(f, torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), NAN))


def test_a_nan_learning_rate_is_refused_everywhere():
    from mllib import robust
    from mllib.decentralized import dpsgd_step
    from mllib.compression import lecture as compression_lecture
    from mllib.compression.ddp import run_ddp
    from mllib.flower.task import Settings
    from mllib.privacy import dp_sgd

    X = torch.zeros(4, MODEL.dim)
    gen = mllib.generator(0)
    calls = [
        lambda: mllib.local_sgd(MODEL, X, CLIENTS, steps=1, lr=NAN, batch_size=2, gen=gen),
        lambda: dpsgd_step(X, torch.eye(4), X, NAN),
        lambda: dp_sgd(MODEL, X, torch.zeros(4, 5, 64), torch.zeros(4, 5, dtype=torch.long), steps=1, lr=NAN, q=0.5,
                       clip=1.0, sigma=1.0, gen=gen),
        lambda: robust.byzantine_sgd(MODEL, CLIENTS, steps=1, lr=NAN, batch_size=2, aggregate=robust.Mean(), gen=gen),
        lambda: Settings(lr=NAN),
        lambda: compression_lecture.train_compressed(None, MODEL, CLIENTS, rounds=1, lr=NAN, batch_size=2),
        lambda: mllib.engine.descend(NAN),
        lambda: run_ddp(lr=NAN),
    ]  # fmt: skip
    for call in calls:
        raises(ValueError, "^lr must be a finite number", call)
    raises(ValueError, "^server_lr must be a finite number, got nan", lambda: mllib.engine.move(NAN))


def test_obscure_errors_now_name_the_argument():
    from mllib.federated import server_step

    raises(TypeError, "^n_clients must be an integer >= 1, got None", lambda: mllib.split(DATA, None, gen=mllib.generator(0)))
    raises(TypeError, "^test_fraction must be", lambda: mllib.load("digits", test_fraction="a", gen=mllib.generator(0)))
    raises(TypeError, "^n_clients must be an integer >= 1, got 2.5", lambda: mllib.split(DATA, 2.5, gen=mllib.generator(0)))
    raises(ValueError, r"^weights must have shape \(4,\), one per row of Y",
           lambda: server_step(torch.zeros(3), torch.ones(4, 3), torch.ones(3)))  # fmt: skip
    raises(ValueError, "^X must be a client matrix", lambda: mllib.weighted_average(torch.zeros(0, 3), torch.ones(0)))


def test_obscure_errors_of_the_engine_privacy_and_split_now_name_the_argument():
    from mllib import engine
    from mllib.compression.ddp import run_ddp
    from mllib.spread import over_seeds

    raises(TypeError, "^k must be an integer >= 1, got 2.5", lambda: engine.uniform(4, 2.5, mllib.generator(0)))
    raises(ValueError, r"^weights must have shape \(4,\), one per row of M, got \(3,\)",
           lambda: engine.weighted_mean(torch.ones(4, 2), torch.ones(3)))
    raises(ValueError, r"^alpha must be a finite number in \(0, 1e\+06\], got 1e\+300",
           lambda: mllib.split(DATA, 4, "dirichlet", alpha=1e300, gen=mllib.generator(0)))
    raises(TypeError, "^rounds must be an integer >= 1, got 2.5", lambda: engine.run(_nodes(), 2.5))
    raises(ValueError, "^world_size must be an integer in", lambda: run_ddp(world_size=10**6))
    raises(TypeError, "^rank must be an integer >= 1, got 2.5", lambda: run_ddp(rank=2.5))
    raises(TypeError, "^seeds must be a sequence of seeds", lambda: over_seeds(lambda seed: 0.0, 5))
    assert engine.weighted_mean([[1, 2], [3, 4]], [1, 1]).tolist() == [2.0, 3.0]


def _nodes():
    return mllib.engine.Decentralized(torch.zeros(4, 3), local=lambda X: X, combine=lambda X, M, r: X)


def test_a_number_gets_noise_as_a_0d_tensor_and_tensors_the_same_noise_as_before():
    from mllib import privacy
    from mllib.runtime import rand, randn

    laplace = dict(sensitivity=1.0, epsilon=0.5)
    gauss = dict(sensitivity=1.0, epsilon=0.5, delta=1e-5)
    assert privacy.laplace_mechanism(0.5, **laplace, gen=mllib.generator(0)).shape == ()
    assert privacy.gaussian_mechanism(3.0, **gauss, gen=mllib.generator(0)).shape == ()
    value = torch.rand(3, 4, 5, generator=mllib.generator(1))
    u = rand(3, 4, 5, gen=mllib.generator(2)) - 0.5
    assert torch.equal(privacy.laplace_mechanism(value, **laplace, gen=mllib.generator(2)),
                       value - 2.0 * torch.sign(u) * torch.log1p(-2 * u.abs()))  # fmt: skip
    sigma = privacy.gaussian_sigma(**gauss)
    assert torch.equal(privacy.gaussian_mechanism(value, **gauss, gen=mllib.generator(2)),
                       value + sigma * randn(3, 4, 5, gen=mllib.generator(2)))  # fmt: skip


@pytest.mark.parametrize(("local", "server_step", "expected"), [
    (lambda x, S: torch.zeros(5, 3), None, r"^the local part <lambda> must return a tensor of shape \(4, 3\)"),
    (lambda x, S: torch.zeros(4, 3, dtype=torch.int64), None, "^the local part <lambda> must return .* dtype torch.float32"),
    (lambda x, S: torch.zeros(4, 3), lambda x, v: None, r"^server_step <lambda> must return a tensor of shape \(3,\)"),
    (lambda x, S: torch.zeros(4, 3), lambda x, v: torch.zeros(4, 3), r"^server_step <lambda> must return a tensor of shape \(3,\)"),
])  # fmt: skip
def test_what_federated_parts_return_is_checked(local, server_step, expected):
    federation = mllib.engine.Federated(torch.zeros(3), local=local, select=mllib.engine.everyone(4),
                                        weights=torch.ones(4), server_step=server_step)  # fmt: skip
    raises(ValueError, expected, lambda: federation.round(1))


def test_lists_and_arrays_are_converted_and_integer_tensors_become_floats():
    average = mllib.weighted_average([[1, 2], [3, 4]], np.array([1, 1]))
    assert average.dtype == torch.get_default_dtype() and average.tolist() == [2.0, 3.0]


# ------------------------------------------------------------------------------ the last hand-written checks
def test_the_numerics_functions_declared_last_check_how_their_arguments_relate():
    from mllib.numerics import formats, hashing, training

    params = training.init_mlp(64, 8, 10, gen=mllib.generator(0))
    x, y = DATA.x_test.flatten(1), DATA.y_test
    raises(ValueError, r"^y must hold one label per row of x, \d+, got 3", lambda: training.mlp_accuracy(params, x, y[:3]))
    raises(ValueError, "^params must map names to tensors", lambda: training.compressed_bytes({"W": [1.0]}, 8, sparse=False))
    raises(ValueError, "^sparsity must be", lambda: training.compress(params, 1.0))
    X, labels = torch.rand(6, 5, generator=mllib.generator(0)), torch.tensor([0, 1, 2, 3, 4, 0])
    raises(ValueError, r"^y must hold labels in \[0, n_classes\) = \[0, 4\), got labels in \[0, 4\]",
           lambda: hashing.train_linear(X, labels, X, labels, n_classes=4))
    raises(ValueError, "^X_test must have X's 5 features, got 4", lambda: hashing.train_linear(X, labels, X[:, :4], labels,
                                                                                                n_classes=5))  # fmt: skip
    raises(ValueError, "^fmt must be a float format torch has a dtype for", lambda: formats.cast_like_torch(X, "tf32"))
    assert torch.equal(formats.cast_like_torch(X, "bf16"), X.to(torch.bfloat16).float())


def test_robust_checks_name_the_argument_and_the_rule_in_the_one_form():
    from mllib import robust

    raises(ValueError, r"^X must be a client matrix .*of floats, got a tensor of shape \(9,\) for Mean",
           lambda: robust.Mean(0)(torch.ones(9)))  # fmt: skip
    raises(ValueError, r"^f must be < n/2 = 2, .*got f=2 of n=4 for CoordinateMedian",
           lambda: robust.CoordinateMedian(2)(torch.zeros(4, 3)))  # fmt: skip
    raises(TypeError, "^f must be an integer >= 0, got 1.5", lambda: robust.rules.check_f(1.5, 4, "attack_grid"))
    lecture_05 = r"^krum needs n > 2f \+ 2 \(Blanchard et al. 2017\): got n=7, f=3; pass f <= 2$"  # printed there
    raises(ValueError, lecture_05, lambda: robust.krum(torch.zeros(7, 4), 3))


def test_ranges_of_numbers_or_tensors_are_checked_in_every_entry():
    from mllib.personalized import harmful_bias, optimal_weight

    raises(ValueError, "^var_own must be >= 0, got -1.0$", lambda: optimal_weight(-1.0, 10, 1.0, 10, 0.0))
    raises(ValueError, r"^n_own must be >= 1, got 0.5 in a tensor of shape \(2,\)",
           lambda: optimal_weight(1.0, torch.tensor([10.0, 0.5]), 1.0, 10, 0.0))
    raises(ValueError, r"^beta must be in \(0, 1\], got 1.5", lambda: harmful_bias(1.0, 10, 1.0, 10, torch.tensor([0.5, 1.5])))


def test_dp_sgd_declares_its_shapes_and_per_row_ranges():
    from mllib.privacy import dp_sgd

    X, x, y = torch.zeros(2, MODEL.dim), torch.zeros(2, 5, 64), torch.zeros(2, 5, dtype=torch.long)
    train = dict(steps=1, lr=0.1, q=0.5, gen=mllib.generator(0))
    raises(ValueError, r"^sigma must be >= 0, got -1.0 in a tensor of shape \(2,\)",
           lambda: dp_sgd(MODEL, X, x, y, clip=1.0, sigma=torch.tensor([1.0, -1.0]), **train))
    raises(ValueError, "^clip must be > 0, got 0.0", lambda: dp_sgd(MODEL, X, x, y, clip=torch.tensor([1.0, 0.0]), sigma=1.0,
                                                                   **train))  # fmt: skip
    raises(ValueError, rf"^X must have shape \(3, {MODEL.dim}\), one row per data set in y",
           lambda: dp_sgd(MODEL, X, torch.zeros(3, 5, 64), torch.zeros(3, 5, dtype=torch.long), clip=1.0, sigma=1.0,
                          **train))  # fmt: skip


def test_a_compressor_checks_the_rank_of_its_rows_with_the_shared_message():
    from mllib.compression import ScaledSign, TopK

    raises(ValueError, r"^X must be a client matrix of shape \(n_clients, d\), got a tensor of shape \(3,\)",
           lambda: TopK(k=1).encode(torch.zeros(3)))  # fmt: skip
    raises(TypeError, r"^X must be a client matrix of shape \(n_clients, d\), got \[\[1.0, 2.0\]\]",
           lambda: ScaledSign()([[1.0, 2.0]]))  # fmt: skip


# ------------------------------------------------------------------------------ numeric edges
EDGES = st.one_of(st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e300, NAN, INF, -INF]),
                  st.floats(allow_nan=True, allow_infinity=True))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(sigma=st.one_of(st.sampled_from([0.0, -0.0, -5e-324, -1e300, 5e-324, 1e-200, 1e300, NAN, INF, -INF]),
                       st.floats(min_value=0, exclude_min=True, allow_infinity=False)))  # fmt: skip
def test_compute_rdp_answers_or_names_sigma_at_every_edge(sigma):
    from mllib.privacy import compute_rdp

    try:
        with time_limit(TIME_LIMIT_S):
            rdp = compute_rdp(q=0.01, sigma=sigma, steps=10, orders=(2.0, 8.5, 32.0))
    except ValueError as error:
        assert str(error).startswith("sigma must be a finite number > 0")
        assert not (math.isfinite(sigma) and sigma > 0)
    else:
        assert np.all(rdp >= 0) and not np.any(np.isnan(rdp))


@settings(max_examples=60, deadline=None)
@given(var_own=EDGES, bias=EDGES)
def test_optimal_weight_is_a_weight_or_an_error_naming_its_argument(var_own, bias):
    from mllib.personalized import optimal_weight

    try:
        beta = float(optimal_weight(var_own, 10, 1.0, 10, bias))
    except ValueError as error:
        assert re.match(r"(var_own|bias) must be", str(error))
    else:
        assert 0.0 <= beta <= 1.0


@settings(max_examples=60, deadline=None)
@given(eps=EDGES)
def test_fgsm_stays_in_the_image_range_or_names_eps(eps):
    from mllib import adversarial

    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.rand(3, 1, 2, 2, generator=mllib.generator(0))
    try:
        x_adv = adversarial.fgsm(f, x, torch.zeros(3, dtype=torch.long), eps)
    except ValueError as error:
        assert str(error).startswith("eps must be")
    else:
        assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
