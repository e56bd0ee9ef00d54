import inspect

import pytest
import torch

from mllib import federated, source
from mllib.data import quadratics
from mllib.source import show_source


def test_show_source_displays_the_code_that_runs_from_its_def():
    code = show_source(federated.server_step)
    assert code.data.startswith("# mllib.federated.algorithms.server_step\ndef server_step(")
    assert "return" in code.data and "@constrain" not in code.data  # the constraints are checks, not the rule
    assert '"""' not in code.data  # the docstring neither: the lecture shows the rule as math
    method = show_source(federated.FedAvg.update)
    assert method.data.startswith("# mllib.federated.algorithms.FedAvg.update\ndef update(")


@pytest.mark.parametrize("bad", [len, lambda x: x, 3, "server_step"])
def test_show_source_refuses_what_is_not_mllib_code(bad):
    with pytest.raises(TypeError, match="function must be"):
        show_source(bad)


@pytest.fixture
def fresh_watch(monkeypatch):
    monkeypatch.setattr(source, "_displayed", set())
    monkeypatch.setattr(source, "_ran", set())


def test_displayed_code_ran_once_the_displayed_function_runs(fresh_watch):
    x, Y, weights = torch.zeros(3), torch.ones(4, 3), torch.ones(4)
    before = federated.server_step(x, Y, weights)
    show_source(federated.server_step)
    assert not source.displayed_code_ran()
    assert source.unrun_displayed() == ["mllib.federated.algorithms.server_step"]
    assert torch.equal(federated.server_step(x, Y, weights), before)  # the marked code computes the same
    assert source.displayed_code_ran() and source.unrun_displayed() == []


def test_a_caller_holding_the_function_elsewhere_runs_the_marked_code(fresh_watch):
    """The engine calls ``fedavg_update.__wrapped__`` (its checks ran once): that call counts too."""
    show_source(federated.fedavg_update)
    problem = federated.QuadraticProblem(quadratics(4, 3, gen=torch.Generator().manual_seed(0)))
    federated.run(federated.FedAvg(local_steps=2, lr=0.1), problem, torch.zeros(3), rounds=1, clients_per_round=2,
                  gen=torch.Generator().manual_seed(0))  # fmt: skip
    assert source.displayed_code_ran()


def test_the_marked_code_keeps_its_line_numbers(fresh_watch):
    original = inspect.unwrap(federated.fedavg_update).__code__
    show_source(federated.fedavg_update)
    marked = inspect.unwrap(federated.fedavg_update).__code__
    assert marked is not original and marked.co_firstlineno == original.co_firstlineno
    assert marked.co_filename == original.co_filename
