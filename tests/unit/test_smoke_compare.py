"""The smoke test's comparison of a score with the sample response: numbers within 1e-6 relative, and the
first difference named so that an operator can find it."""

from __future__ import annotations

import pytest

from shared.contract import first_difference


@pytest.mark.parametrize(("got", "wanted"), [
    ({"result": [1.0, 2.0]}, {"result": [1.0, 2.0]}),
    ({"result": [100.0000001]}, {"result": [100.0]}),       # within 1e-6 relative
    ({"result": [0.0]}, {"result": [0]}),                     # int and float alike
    ({"result": [[1, 2], [3, 4]], "extra": 1}, {"result": [[1, 2], [3, 4]]}),  # extra keys are not checked
    ({"result": ["cat", True]}, {"result": ["cat", True]}),
])
def test_equal_enough_answers_have_no_difference(got, wanted):
    assert first_difference(got, wanted) == ""


@pytest.mark.parametrize(("got", "wanted", "where"), [
    ({"result": [1.0, 2.0, 3.0, 1.0]}, {"result": [1.0, 2.0, 3.0, 2.0]}, "result[3]: 1.0 vs 2.0 expected"),
    ({"result": [100.001]}, {"result": [100.0]}, "result[0]: 100.001 vs 100.0 expected"),
    ({"result": [1.0]}, {"result": [1.0, 2.0]}, "result: 1 values vs 2 expected"),
    ({"result": [[1, 2], [3, 5]]}, {"result": [[1, 2], [3, 4]]}, "result[1][1]: 5 vs 4 expected"),
    ({"other": 1}, {"result": [1]}, "the top level: no 'result'"),
    ({"result": "1.0"}, {"result": [1.0]}, 'result: "1.0" vs a list expected'),
    ({"result": [True]}, {"result": [1]}, "result[0]: true vs 1 expected"),
    ([1, 2], [1, 3], "[1]: 2 vs 3 expected"),
])
def test_the_first_difference_is_named_with_its_path_and_both_values(got, wanted, where):
    assert first_difference(got, wanted) == where
