"""`make verify`: committed outputs against the working tree, cell by cell.

The command is run on a scratch git repository holding a committed results CSV, a cleaning
CSV and a `_variables.yml`; altered copies must be classified identical / within / ignored /
different and set the exit code.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hetfx.paper import verify as V

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "analysis" / "verify.py"

FIT = "results/tomz_weeks/m1_published/groups.csv"
A1 = "results/tomz_weeks/a1_published/diagnostics.csv"
CLEAN = "data/clean/tomz_weeks_summary.csv"
VARS = "manuscript/_variables.yml"

FIT_TEXT = "group,median,q975\nA,0.123456789012,0.5\nB,-0.25,0.75\n"
A1_TEXT = "sampler,max_r_hat,wall_seconds\ncollapsed,1.0014715849268272,1.03\n"
CLEAN_TEXT = "variable,mean,n\nforce,0.630833,1200\n"
VARS_TEXT = "# header\nbp_min: \u22120.20\nsim_n: 2,000\nci_level: 95%\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for path, text in ((FIT, FIT_TEXT), (A1, A1_TEXT), (CLEAN, CLEAN_TEXT), (VARS, VARS_TEXT)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "outputs")
    return tmp_path


def verify(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(repo), *args],
        capture_output=True,
        text=True,
        env=env,
    )


def counts(out: str, path: str) -> dict[str, int]:
    line = next(ln for ln in out.splitlines() if ln.startswith(path + " "))
    return dict(zip(V.CLASSES, map(int, line.split()[1:5]), strict=True))


def test_unchanged_tree_verifies(repo):
    done = verify(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout, FIT) == {"identical": 6, "within": 0, "ignored": 0, "different": 0}
    assert counts(done.stdout, A1)["ignored"] == 1  # wall_seconds
    assert counts(done.stdout, VARS) == {"identical": 3, "within": 0, "ignored": 0, "different": 0}


def test_run_time_columns_dropped_since_the_commit_are_no_difference(repo):
    # the stages now write run times to timings/: diagnostics.csv loses wall_seconds
    (repo / A1).write_text("sampler,max_r_hat\ncollapsed,1.0014715849268272\n")
    done = verify(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout, A1) == {"identical": 2, "within": 0, "ignored": 1, "different": 0}
    # a result column dropped is still a difference
    (repo / A1).write_text("sampler,wall_seconds\ncollapsed,1.03\n")
    done = verify(repo)
    assert done.returncode == 1 and counts(done.stdout, A1)["different"] == 1


def test_within_tolerance_and_ignored_columns_pass(repo):
    # 1e-12 on a quadrature result (tolerance 1e-9), 4e-7 on A1's R-hat (1e-6), a rerun's
    # wall time, and 0.5 printed as 0.50: none is a difference
    (repo / FIT).write_text(
        FIT_TEXT.replace("0.123456789012", "0.123456789013").replace("0.5,", "0.50,"),
        encoding="utf-8",
    )
    (repo / A1).write_text(
        A1_TEXT.replace("1.0014715849268272", "1.0014719849268272").replace("1.03", "7.5"),
        encoding="utf-8",
    )
    done = verify(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout, FIT) == {"identical": 5, "within": 1, "ignored": 0, "different": 0}
    assert counts(done.stdout, A1) == {"identical": 1, "within": 1, "ignored": 1, "different": 0}


def test_difference_beyond_tolerance_fails_and_is_shown(repo):
    # 1e-6 is within A1's tolerance but not within the quadrature's 1e-9
    (repo / FIT).write_text(FIT_TEXT.replace("0.123456789012", "0.123457789012"), encoding="utf-8")
    done = verify(repo)
    assert done.returncode == 1
    assert counts(done.stdout, FIT)["different"] == 1
    assert "row 1, median: 0.123456789012 -> 0.123457789012" in done.stdout
    assert FIT in done.stdout.splitlines()[-1]


def test_changed_quoted_number_fails(repo):
    # same value at a finer precision is still a different printed number
    (repo / VARS).write_text(VARS_TEXT.replace("\u22120.20", "\u22120.19"), encoding="utf-8")
    done = verify(repo)
    assert done.returncode == 1
    assert counts(done.stdout, VARS) == {"identical": 2, "within": 0, "ignored": 0, "different": 1}
    assert "bp_min: \u22120.20 -> \u22120.19" in done.stdout


def test_missing_file_changed_shape_and_text_fail(repo):
    (repo / CLEAN).unlink()
    (repo / A1).write_text(A1_TEXT.replace("collapsed", "nutpie"), encoding="utf-8")
    (repo / FIT).write_text(FIT_TEXT + "C,0.1,0.2\n", encoding="utf-8")
    done = verify(repo)
    assert done.returncode == 1
    assert "missing in the working tree" in done.stdout
    assert counts(done.stdout, A1)["different"] == 1
    assert "2 rows committed, 3 now" in done.stdout


def test_not_a_repository_is_an_error(tmp_path):
    done = verify(tmp_path)
    assert done.returncode == 2
    assert "verify failed" in done.stderr


# --------------------------------------------------------------------------- the library


def test_tolerance_table():
    assert (
        V.tolerance_for("results/tomz_weeks/m1_published/diagnostics.csv", "wall_seconds").tol
        is None
    )
    assert V.tolerance_for("results/tomz_weeks/a1_corrected/groups.csv", "median").tol == 1e-6
    assert V.tolerance_for("results/bush_prather/bp_published/coefs.csv", "q025").tol == 1e-6
    assert V.tolerance_for("results/tomz_weeks/m1_ols_published/groups.csv", "estimate").tol == 1e-9
    assert V.tolerance_for("results/simulation/spec/summary.csv", "rmse_mean").tol == 1e-9
    assert V.tolerance_for("data/clean/tomz_weeks_checks.csv", "value").tol == 1e-9
    assert V.tolerance_for("elsewhere.csv", "x").tol == 0.0


@pytest.mark.parametrize(
    ("a", "b", "tol", "status"),
    [
        ("0.5", "0.5", 1e-9, "identical"),
        ("0.5", "0.50", 0.0, "identical"),
        ("", "nan", 0.0, "identical"),
        ("1000", "1000.0000005", 1e-9, "within"),  # relative for large numbers
        ("1000", "1000.000002", 1e-9, "different"),
        ("0.1", "0.1000000011", 1e-9, "different"),  # absolute below 1
        ("1", "", 1e-3, "different"),
        ("a", "b", 1.0, "different"),
        ("1", "2", None, "ignored"),
    ],
)
def test_cell_classes(a, b, tol, status):
    assert V._classify(a, b, tol)[0] == status


def test_worst_cells_put_real_differences_first():
    report = V.compare_csv(
        "results/tomz_weeks/a1_published/groups.csv", "v,w\n1,1\n", "v,w\n1.0000005,1.1\n"
    )
    assert report.counts == {"identical": 0, "within": 1, "ignored": 0, "different": 1}
    worst = report.worst(2)
    assert [c.status for c in worst] == ["different", "within"]
    assert math.isclose(worst[0].abs_diff, 0.1)


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        (FIT, 0.123456789012345, "0.123456789"),  # 9 decimals below 1 (tolerance 1e-9)
        (FIT, 7740.123456789012, "7740.123457"),  # 10 significant digits above
        (FIT, -1e-13, "0"),  # below the resolution: no "-0" on another CPU
        (FIT, 3.0, "3"),
        (A1, 0.123456789012345, "0.123457"),  # tolerance 1e-6: 6 decimals, 7 digits
        (A1, 1.2345678901e5, "123456.8"),
        ("timings/fit.csv", 0.1 + 0.2, "0.30000000000000004"),  # no tolerance: in full
    ],
)
def test_numbers_are_written_at_the_resolution_of_their_tolerance(path, value, text):
    assert V.format_number(value, path) == text


def test_written_numbers_verify_against_full_precision_and_last_digit_flips():
    """A number written by format_number is within its file's tolerance of the full value
    (the committed files before rounding) and of the neighbour one unit away in the last
    written digit (another CPU's rounding the other way); last-bit changes leave the text."""
    import random
    from decimal import Decimal

    rnd = random.Random(0)
    for path in (FIT, A1, CLEAN):
        tol = V.tolerance_for(path, "*").tol
        same = 0
        for _ in range(400):
            x = rnd.choice([-1, 1]) * 10 ** rnd.uniform(-6, 5)
            text = V.format_number(x, path)
            assert V._classify(repr(x), text, tol)[0] in ("identical", "within"), (x, text)
            # one unit of the last digit the file's precision writes (%g drops trailing zeros)
            k = round(-math.log10(tol))
            unit = Decimal(1).scaleb(max(math.floor(math.log10(abs(x))), 0) - k)
            bumped = V.format_number(float(Decimal(text) + unit), path)
            assert V._classify(text, bumped, tol)[0] != "different", (text, bumped)
            same += V.format_number(x * (1 + 1e-13), path) == text
        assert same >= 398, same  # a flip needs a number within 1e-13 of a rounding edge
