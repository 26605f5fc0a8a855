"""The one error type the commands turn into a line and an exit status."""

from kstyle.errors import KstyleError


def test_usage_errors_exit_2_unless_told_otherwise():
    assert KstyleError("bad input").exit_code == 2
    error = KstyleError("loss became NaN", exit_code=3)
    assert error.exit_code == 3 and str(error) == "loss became NaN"
    assert isinstance(error, Exception)


def test_cause_of_says_what_went_wrong_not_the_class():
    import urllib.error

    from kstyle.errors import cause_of

    try:
        try:
            raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
        except urllib.error.URLError as inner:
            raise Exception() from inner  # a wrapper without a message, as some libraries raise
    except Exception as error:
        assert cause_of(error) == "Temporary failure in name resolution"
    assert cause_of(FileNotFoundError(2, "No such file or directory", "x.json")) == (
        "No such file or directory"
    )
    assert cause_of(ValueError("bad value\nmore detail")) == "bad value"
    assert cause_of(KeyError()) == "KeyError"  # nothing else to say
