"""The one error type the commands turn into a line and an exit status."""

from kstyle.errors import KstyleError


def test_usage_errors_exit_2_unless_told_otherwise():
    assert KstyleError("bad input").exit_code == 2
    error = KstyleError("loss became NaN", exit_code=3)
    assert error.exit_code == 3 and str(error) == "loss became NaN"
    assert isinstance(error, Exception)
