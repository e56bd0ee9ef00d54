"""The self-check machinery that every lab uses, and what every lab check must offer."""
import importlib
import pkgutil

import pytest
import torch

import mllib.checks
from mllib import adversarial, automl, compression, decentralized, federated, numerics, personalized, privacy, robust
from mllib import systems
from mllib.checks import CheckFailed, Mistake, describe, difference, number_in_range, self_check
from mllib.compression import compressors
from mllib.compression.compressors import ErrorFeedback, TopK
from mllib.runtime import generator


def reference_double(x):
    return 2 * x


def library_double(x):
    return 2 * x


@self_check(
    reference_double,
    mistakes=[Mistake(lambda x: -2 * x, "the sign is flipped", "double, not negate"),
              Mistake(lambda x: x, "the factor 2 is missing", "multiply by 2")],  # fmt: skip
    forbid=[library_double],
)
def double(gen):
    return [dict(x=torch.randn(3, generator=gen)), dict(x=torch.randn(2, 4, generator=gen))]


def test_a_correct_answer_passes_and_says_so(capsys):
    double(lambda x: x + x)
    assert "✔ double: matches the reference on 2 inputs" in capsys.readouterr().out


def test_the_check_knows_its_reference_and_mistakes():
    assert double.reference is reference_double and len(double.mistakes) == 2


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda x: 3 * x, "double: 3 of 3 values differ\nthe largest gap at index"),
        (lambda x: (2 * x).sum(), "double: output has shape ()"),
        (lambda x: (2 * x).tolist(), "double: expected a torch.Tensor, got list"),
        (lambda x: x.mul_(2), "double: your function modified its input 'x'"),
        (lambda x: None, "double: your function returned None; did you forget `return`?"),
        (lambda x: -2 * x, "double: the sign is flipped\nhint: double, not negate\non input #1: x=tensor("),
        (lambda x: x.clone(), "double: the factor 2 is missing\nhint: multiply by 2"),
        (lambda x: library_double(x), "double: your function calls the library's library_double"),
    ],
)
def test_a_wrong_answer_is_told_what_differed(answer, message):
    with pytest.raises(CheckFailed) as failure:
        double(answer)
    assert str(failure.value).startswith(message)


def test_the_forbidden_function_is_back_after_the_check():
    with pytest.raises(CheckFailed):
        double(lambda x: library_double(x))
    assert torch.equal(library_double(torch.ones(1)), torch.tensor([2.0]))


def test_an_error_in_the_students_code_keeps_its_traceback_with_a_note():
    with pytest.raises(IndexError) as error:
        double(lambda x: x[5])
    assert "in the check double, on input #1: x=tensor(" in error.value.__notes__[0]


def test_an_unfinished_exercise_is_told_to_fill_it_in():
    def stub(x):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        double(stub)


def test_a_failed_check_renders_as_its_message_alone_in_red():
    with pytest.raises(CheckFailed) as failure:
        double(lambda x: -2 * x)
    lines = failure.value._render_traceback_()
    assert lines[0] == "\x1b[31m✘ double: the sign is flipped\x1b[0m" and len(lines) <= 5


def test_bad_arguments_to_a_check_are_the_checks_error():
    with pytest.raises(ValueError, match="atol must be a finite number >= 0, got -1"):
        double(reference_double, atol=-1)
    with pytest.raises(TypeError, match="answer must be"):
        double(None)


def test_other_seeds_are_hidden_cases(capsys):
    assert not torch.equal(double.make_cases(generator(0))[0]["x"], double.make_cases(generator(1))[0]["x"])
    double(lambda x: x + x, seed=7)
    assert "✔ double" in capsys.readouterr().out


def test_an_experiment_answer_is_checked_against_its_range(capsys):
    number_in_range("rounds_to_target", 12, 10, 20, hint="count the rounds")
    assert "✔ rounds_to_target: 12 is in the expected range" in capsys.readouterr().out
    for value in (9, 21, float("inf")):
        with pytest.raises(CheckFailed, match=r"^rounds_to_target: .* is outside the range \[10, 20\]"):
            number_in_range("rounds_to_target", value, 10, 20, hint="count the rounds")
    with pytest.raises(TypeError, match="value must be"):
        number_in_range("rounds_to_target", "12", 10, 20, hint="count the rounds")
    with pytest.raises(ValueError, match="value must be a number .*, got nan"):
        number_in_range("rounds_to_target", float("nan"), 10, 20, hint="count the rounds")


def test_difference_points_at_the_largest_gap():
    got, expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.0, 9.0]])
    assert difference(got, expected, atol=1e-5, rtol=0) == (
        "1 of 4 values differ\nthe largest gap at index (1, 1): got 4, expected 9"
    )
    assert difference(expected, expected, atol=0, rtol=0) is None
    assert difference(torch.tensor(1.0), torch.tensor(2.0), atol=0, rtol=0).endswith("got 1, expected 2")
    assert difference(3, 4, atol=0, rtol=0) == "got 3, expected 4"


def test_difference_compares_tuples_element_by_element():
    pair = (torch.tensor([1.0]), torch.tensor([2.0, 3.0]))
    assert difference(pair, pair, atol=0, rtol=0) is None
    assert difference(list(pair), pair, atol=0, rtol=0) is None
    assert difference((pair[0], torch.tensor([2.0, 4.0])), pair, atol=0, rtol=0).startswith(
        "in returned value #2: 1 of 2 values differ"
    )
    assert difference(pair[0], pair, atol=0, rtol=0).startswith("expected a tuple of 2 values, got tensor(")


def test_describe_shows_small_tensors_and_shapes_of_large_ones():
    text = describe(dict(w=torch.tensor([0.5, 1.25]), X=torch.zeros(10, 3), k=2))
    assert text == "w=tensor([0.5, 1.25], shape (2,)), X=tensor of shape (10, 3), k=2"


# ---- every lab check in mllib.checks


def lab_checks() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(mllib.checks.__path__):
        module = importlib.import_module(f"mllib.checks.{info.name}")
        for name, value in vars(module).items():
            if callable(value) and hasattr(value, "make_cases") and value.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = value
    return found


CHECKS = lab_checks()
MISTAKES = [(name, i) for name, check in CHECKS.items() for i in range(len(check.mistakes))]


@pytest.mark.parametrize("name, index", MISTAKES, ids=[f"{n}[{i}]" for n, i in MISTAKES])
def test_every_known_mistake_is_rejected_with_its_own_message(name, index):
    check, mistake = CHECKS[name], CHECKS[name].mistakes[index]
    with pytest.raises(CheckFailed) as failure:
        check(mistake.wrong)
    first, hint = str(failure.value).splitlines()[:2]
    assert first == f"{check.__name__}: {mistake.says}" and hint == f"hint: {mistake.hint}"
    assert len(first) <= 100, "the first line of a failed check states the problem in at most 100 characters"


@pytest.mark.parametrize("name", list(CHECKS))
def test_each_check_knows_three_mistakes_each_with_its_own_message_and_hint(name):
    says, hints = [m.says for m in CHECKS[name].mistakes], [m.hint for m in CHECKS[name].mistakes]
    assert len(says) >= 3, "a lab check names at least three mistakes students make (issue #22)"
    assert len(set(says)) == len(says) and len(set(hints)) == len(hints)


# ---- a build exercise (issue #22): an answer that calls the library's implementation fails its check.
# Each answer calls the library's version of what its exercise asks; most (EF-SGD's, the audit's bypass of
# the compressor classes, among them) would pass if the check let it run.


def scaffold_with_the_library_control_variates(x, c, C, A, b, weights, local_steps, lr, server_lr):
    Y = x.expand(len(b), -1)
    for _ in range(local_steps):
        Y = Y - lr * (torch.einsum("nij,nj->ni", A, Y) - b + c - C)
    C_new, p = federated.scaffold_control_update(C, c, x, Y, local_steps, lr), weights / weights.sum()
    return x + server_lr * p @ (Y - x), federated.control_variate_step(c, C_new - C, p), C_new


def ditto_with_the_library_steps(model, w, V, xb, yb, xp, yp, weights, lr, lam):
    for inputs, labels in zip(xp, yp):
        V = personalized.ditto_update(V, w, model.grad(V, inputs, labels), lr, lam)
    return weights @ personalized.fine_tune_on(model, w, xb, yb, lr) / weights.sum(), V


def gossip_with_the_library_weights(X, A, steps):
    W = decentralized.metropolis_hastings(A).to(X.dtype)
    return torch.tensor(decentralized.gossip_run(X, W, steps), dtype=torch.float64)


def ef_sgd_compressing_with(make):
    """EF-SGD whose compressor ``make(k, error_feedback)`` builds (the audit's bypass of #22)."""

    def ef_sgd(model, x, xb, yb, k, lr, error_feedback):
        compressor = make(k, error_feedback)
        for inputs, labels in zip(xb, yb):
            x = x - compressor.compress(lr * model.grad(x.expand(xb.shape[1], -1), inputs, labels)).mean(0)
        return x

    return ef_sgd


class OwnTopK(compression.Compressor):
    """A student's own top-k, to wrap in the library's error feedback."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def compress(self, X):
        idx = X.abs().topk(self.k, dim=1).indices
        return torch.zeros_like(X).scatter(1, idx, X.gather(1, idx))

    def bits_per_row(self, d):
        return 64 * self.k


def krum_of_the_library(X, f):
    return robust.krum(X, f)


def pgd_of_the_library(f, x, y, eps, norm, steps, step_size, start):
    return adversarial.pgd(f, x, y, eps, norm=norm, steps=steps, step_size=step_size)


def dp_sgd_of_the_library(model, row, x, y, uniforms, noises, lr, clip, sigma, q, delta):
    trained = privacy.dp_sgd(model, row[None], x[None], y[None], steps=len(uniforms), lr=lr, q=q, clip=clip,
                             sigma=sigma, gen=torch.Generator().manual_seed(0))[0]  # fmt: skip
    return trained, privacy.epsilon(q=q, sigma=sigma, steps=len(uniforms), delta=delta)


def working_sets_by_the_library_solver(A, b, lam, alpha, rounds, budget, epochs):
    alpha = alpha.clone()
    for _ in range(rounds * epochs):
        systems.coordinate_descent(A, alpha, A @ alpha - b, range(len(alpha)), lam, "ridge", A.pow(2).sum(0))
    return alpha


def stochastic_rounding_of_the_library(x, exponent_bits, mantissa_bits, bias, u):
    fmt = numerics.FloatFormat("x", exponent_bits, mantissa_bits, bias, True, 0.0)
    return numerics.round_to(x, fmt, stochastic=True, gen=torch.Generator())


def halving_of_the_library(curves, configs, min_resource, eta):
    return automl.successive_halving(curves, configs, min_resource, eta)


def cheat(answer, name: str, refused: str, via: str = ""):
    """An answer that calls the library, the check it fails, and the library's name the check refuses."""
    return pytest.param(answer, name, refused, id=f"{name} {via}".strip())


CHEATS = [
    cheat(scaffold_with_the_library_control_variates, "federated.scaffold_round", "scaffold_control_update"),
    cheat(ditto_with_the_library_steps, "personalized.ditto_round", "ditto_update"),
    cheat(gossip_with_the_library_weights, "decentralized.metropolis_gossip", "metropolis_hastings"),
    cheat(ef_sgd_compressing_with(lambda k, ef: compression.ErrorFeedback(compression.TopK(k=k)) if ef
                                  else compression.TopK(k=k)), "compression.ef_sgd", "TopK", "mllib.compression"),
    cheat(ef_sgd_compressing_with(lambda k, ef: compressors.ErrorFeedback(compressors.TopK(k=k)) if ef
                                  else compressors.TopK(k=k)), "compression.ef_sgd", "TopK", "compressors module"),
    cheat(ef_sgd_compressing_with(lambda k, ef: ErrorFeedback(TopK(k=k)) if ef else TopK(k=k)),
          "compression.ef_sgd", "TopK", "a notebook's import"),
    cheat(ef_sgd_compressing_with(lambda k, ef: compression.ErrorFeedback(OwnTopK(k)) if ef else OwnTopK(k)),
          "compression.ef_sgd", "ErrorFeedback", "around its own top-k"),
    cheat(krum_of_the_library, "robust.krum", "krum"),
    cheat(pgd_of_the_library, "adversarial.pgd", "pgd"),
    cheat(dp_sgd_of_the_library, "privacy.dp_sgd", "dp_sgd"),
    cheat(working_sets_by_the_library_solver, "systems.gap_working_sets", "coordinate_descent"),
    cheat(stochastic_rounding_of_the_library, "numerics.stochastic_round_to_format", "round_to"),
    cheat(halving_of_the_library, "automl.successive_halving", "successive_halving"),
]  # fmt: skip


@pytest.mark.parametrize("answer, name, refused", CHEATS)
def test_a_build_exercise_refuses_an_answer_that_calls_the_library(answer, name, refused):
    check = CHECKS[name]
    with pytest.raises(CheckFailed) as failure:
        check(answer)
    assert str(failure.value).startswith(f"{check.__name__}: your function calls the library's {refused}\n")


def test_every_build_exercise_has_an_answer_that_calls_the_library():
    """The build exercises are the checks that forbid something; tests/test_labs.py shows that the build
    exercise of every lab 01-10 is one."""
    assert {param.values[1] for param in CHEATS} == {name for name, check in CHECKS.items() if check.forbid}
