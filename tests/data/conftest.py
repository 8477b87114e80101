"""The fuzzing tests' counts, printed at the end of a run that ran them."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.data import fuzzing

    if not fuzzing.TALLIES:
        return
    terminalreporter.section("fuzzed inputs")
    for tally in fuzzing.TALLIES:
        what = fuzzing.TARGETS[tally.target][2]
        terminalreporter.write_line(
            f"{tally.target:<15} {tally.tried:>5} cases ({what}): {fuzzing.describe_tally(tally)}"
        )
