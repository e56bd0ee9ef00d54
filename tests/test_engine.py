"""The round engine: its loop and record, and every algorithm run through it equal to its result
before the refactor (tests/references/engine.pt, written by the old code)."""
import ast
import re
import sys

import pytest
import torch

import mllib
from mllib import engine, personalized
from mllib import federated as fl
from notebooks import ROOT

sys.path.insert(0, str(ROOT / "tests" / "references"))
import engine_cases  # noqa: E402

REFERENCE = torch.load(ROOT / "tests" / "references" / "engine.pt")


# ---- cases whose API changed: the same experiments (engine_cases.setting: same data, same seeds)
#      through today's API, compared with the results the old API stored
def federated(algorithm):
    data, clients, model, gen = engine_cases.setting()
    x0 = model.init(gen)
    accuracy = lambda x: mllib.accuracy_on(model, x, data.x_test, data.y_test)  # noqa: E731
    h = fl.run(algorithm, fl.DataProblem(model, clients, 8), x0, rounds=4, clients_per_round=5, gen=gen,
               metrics={"accuracy": accuracy}, eval_every=2, sample_gen=mllib.generator(2))  # fmt: skip
    return {"model": h.model, "accuracy": torch.tensor(h.accuracy), "rounds": torch.tensor(h.rounds)}


def ditto():
    _, clients, model, gen = engine_cases.setting()
    h = personalized.ditto(model, clients, rounds=3, local_steps=2, personal_steps=2, lr=0.1, lam=0.5,
                           batch_size=8, gen=gen, eval_every=2)  # fmt: skip
    return {"personal": h.algorithm.local.personal, "global": h.model,
            "personal_accuracy": torch.stack(h.personal_accuracy), "global_accuracy": torch.stack(h.global_accuracy)}


def stages():
    _, clients, model, gen = engine_cases.setting()
    h = personalized.train_in_stages(model, clients, [[0, 1, 2], [3, 4]], rounds=2, local_steps=2, lr=0.1,
                                     batch_size=8, gen=gen)  # fmt: skip
    return {"model": h.model, "accuracy": torch.stack(h.client_accuracy)}


def byzantine():
    from mllib import robust

    _, clients, model, gen = engine_cases.setting(n=10, alpha=100.0)
    h = robust.byzantine_sgd(model, clients, steps=10, lr=0.1, batch_size=8, aggregate=robust.make("median", 2),
                             attack=robust.make_attack("ALIE", 2), momentum=0.9, gen=gen, eval_every=5)  # fmt: skip
    return {"model": h.model, "accuracy": torch.tensor(h.accuracy), "steps": torch.tensor(h.rounds)}


def dpsgd():
    from mllib import decentralized

    _, clients, model, gen = engine_cases.setting(n=8)
    W = decentralized.mixing_matrix("ring", 8)
    h = decentralized.dpsgd(model, clients, W, steps=10, lr=0.1, batch_size=8, gen=gen, eval_every=5)
    return {"X": h.model, "consensus": torch.tensor(h.consensus), "accuracy": torch.tensor(h.accuracy),
            "average_accuracy": torch.tensor(h.average_accuracy), "steps": torch.tensor(h.rounds)}


CASES = engine_cases.CASES | {
    "D-PSGD": dpsgd,
    "SCAFFOLD": lambda: federated(fl.Scaffold(local_steps=3, lr=0.1)),
    "MIME": lambda: federated(fl.Mime(local_steps=3, lr=0.1, momentum=0.9)),
    "Ditto": ditto,
    "stages": stages,
    "Byzantine": byzantine,
}


def two_units():
    """DuHL's two units and the slow unit alone, as ``systems`` runs them today."""
    from mllib import systems

    gen = mllib.generator(0)
    A, b = torch.randn(40, 30, generator=gen, dtype=torch.float64), torch.randn(40, generator=gen, dtype=torch.float64)
    out = {}
    for rule in systems.hetero.RULES:
        h = systems.train_two_units(A, b, 0.1, budget=8, rule=rule, rounds=5, gen=mllib.generator(1))
        out[rule] = torch.stack([systems.series(h, metric) for metric in systems.METRICS])
    h = systems.hetero.train_slow_alone(A, b, 0.1, rounds=5, updates=8, gen=mllib.generator(1))
    out["slow alone"] = torch.stack([systems.series(h, metric) for metric in systems.METRICS])
    return out


CASES["two units"] = two_units


@pytest.mark.parametrize("name", list(CASES))
def test_every_algorithm_equals_its_result_before_the_refactor(name):
    result, expected = CASES[name](), REFERENCE[name]
    assert result.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-6, atol=1e-7, msg=f"{name}: {key}")


class Counter(engine.Rounds):
    def __init__(self):
        self.done = []

    def round(self, r):
        self.done.append(r)
        self.bits_sent = 8 * r


def test_run_records_every_eval_every_rounds_and_the_last():
    history = engine.run(Counter(), 7, metrics={"rounds so far": lambda a: len(a.done)}, eval_every=3,
                         record_start=True)  # fmt: skip
    assert history.rounds == [0, 3, 6, 7]
    assert history["rounds so far"] == history.metrics["rounds so far"] == [0, 3, 6, 7]
    assert history.bits == [0, 24, 48, 56]
    assert len(history.seconds) == 4 and history.seconds == sorted(history.seconds)
    assert history.algorithm.done == list(range(1, 8))


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError),
                                            (None, TypeError)])  # fmt: skip
def test_run_rejects_rounds_that_are_not_positive_integers(bad, error):
    with pytest.raises(error, match=f"rounds must be an integer >= 1, got {bad!r}"):
        engine.run(Counter(), bad)


def test_history_reads_metrics_by_name_and_says_which_exist():
    history = engine.run(Counter(), 4, metrics={"accuracy": lambda a: 0.25 * len(a.done)})
    assert history.accuracy == [0.25, 0.5, 0.75, 1.0]
    assert history.rounds_to(0.7) == 3 and history.mean_last(2) == 0.875
    with pytest.raises(AttributeError, match="metrics: \\['accuracy'\\]"):
        history.loss  # noqa: B018
    with pytest.raises(ValueError, match="k must be in \\[1, 4\\]"):
        history.mean_last(5)


def test_federated_checks_what_its_aggregate_returns():
    federation = engine.Federated(torch.zeros(3), local=lambda x, S: x.expand(len(S), -1), weights=torch.ones(4),
                                  select=engine.everyone(4), aggregate=lambda M, p: M)  # fmt: skip
    with pytest.raises(ValueError, match=r"aggregate <lambda> must return a tensor of shape \(3,\) and dtype torch.float32, got shape \(4, 3\)"):
        federation.round(1)


ROUNDS = re.compile(r"(^|_)rounds?(_|$)")  # rounds, n_rounds, cfg.rounds, round_, server_round; not rounding
# Loops over rounds that train nothing, each with why it is not a second engine.
NOT_ROUND_LOOPS = {
    ("mllib/personalized/availability.py", "participation_rates"):
        "averages the availability schedule over rounds 1..R: a table of probabilities, no training",
}  # fmt: skip


def names_rounds(expression: ast.expr) -> bool:
    """Whether an expression reads a count of rounds (a name or attribute; the builtin round() is not one)."""
    called = {id(node.func) for node in ast.walk(expression) if isinstance(node, ast.Call)}
    return any(ROUNDS.search(node.id if isinstance(node, ast.Name) else node.attr) for node in ast.walk(expression)
               if isinstance(node, ast.Name | ast.Attribute) and id(node) not in called)  # fmt: skip


def calls_range(expression: ast.expr) -> bool:
    return any(isinstance(node, ast.Call) and ast.unparse(node.func) == "range" for node in ast.walk(expression))


def is_round_loop(node: ast.AST) -> bool:
    """A ``for`` or a comprehension over ``range(...)`` whose bounds name rounds, or a ``while`` whose test does."""
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        return calls_range(node.iter) and names_rounds(node.iter)
    return isinstance(node, ast.While) and names_rounds(node.test)


def round_loops(source: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of each loop over rounds in ``source``."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        function = node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else function
        if is_round_loop(node):
            found.append((function, node.iter.lineno if isinstance(node, ast.comprehension) else node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


@pytest.mark.parametrize("loop", [
    "for r in range(rounds): x = step(x)", "for r in tqdm(range(1, cfg.rounds + 1)): federation.round(r)",
    "history = [algorithm.round(r) for r in range(n_rounds)]", "x = [x := step(x) for _ in range(settings.rounds)]",
    "while r < rounds: r += 1", "while server_round <= num_rounds: server_round = fit(server_round)",
])  # fmt: skip
def test_the_round_loop_finder_sees_every_form_of_loop_over_rounds(loop):
    assert [line for _, line in round_loops(loop)] == [1]


@pytest.mark.parametrize("loop", [
    "for _ in range(local_steps): x = x - lr * grad(x)", "for t in range(steps + keep_best): pass",
    "ids = [k for k in range(round(n * fraction))]", "while len(nodes) < settings.clients: time.sleep(0.2)",
    "for r, entry in sorted(rounds.items()): print(r, entry)", "while spent + R <= budget: spent += R",
])  # fmt: skip
def test_the_round_loop_finder_ignores_loops_over_steps_and_others(loop):
    assert round_loops(loop) == []


def test_the_loop_over_rounds_appears_once_in_mllib():
    # mllib/checks holds the reference answers of the labs' build exercises, where the student
    # writes the loop over rounds (e.g. DuHL's working sets in lab 08): not a second engine
    checks = ROOT / "mllib" / "checks"
    loops = [(str(p.relative_to(ROOT)), function, line) for p in sorted((ROOT / "mllib").rglob("*.py"))
             if checks not in p.parents for function, line in round_loops(p.read_text())]  # fmt: skip
    assert [(path, function) for path, function, _ in loops if (path, function) not in NOT_ROUND_LOOPS] == [
        ("mllib/engine.py", "run")], loops
    assert set(NOT_ROUND_LOOPS) <= {(path, function) for path, function, _ in loops}, "an exemption is stale"


def test_no_library_function_is_named_like_a_test():
    """pytest would collect an imported ``test_*`` function, and a reader would take it for one."""
    named = [f"{p.relative_to(ROOT)}:{node.lineno} {node.name}" for p in (ROOT / "mllib").rglob("*.py")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")]  # fmt: skip
    assert not named
