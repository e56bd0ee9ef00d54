"""nbval with outputs compared by meaning, for every notebook pytest collects.

Here, not in tests/, so that `pytest lectures` alone compares the same way (tests/compare_numbers.py).
"""
from compare_numbers import reconciled, tolerances
from nbval.plugin import IPyNbCell


class ComparedByMeaning(IPyNbCell):
    """An nbval cell whose outputs compare by meaning: text exactly, each number exactly or
    within the tolerance its cell declares."""

    def compare_outputs(self, test, ref, skip_compare=None):
        test, found = reconciled(test, ref, tolerances(self.cell.metadata), self.sanitize)
        same = super().compare_outputs(test, ref, skip_compare)
        if not same:
            self.comparison_traceback[:0] = found
        return same


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item) is IPyNbCell:
            item.__class__ = ComparedByMeaning
