import pytest

from mllib import federated
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
