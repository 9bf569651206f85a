"""Stages `clean_tomz_weeks` and `clean_bush_prather`: validated, recoded data.

Usage: python analysis/clean.py {tomz_weeks,bush_prather}

Writes data/clean/<study>.parquet, <study>_summary.csv (variable, mean, n, n_missing) and
<study>_checks.csv (every checked study fact and every exclusion). Nothing is written
unless every check passes.
"""

import sys
from pathlib import Path

import pandas as pd

from _stage import load_params, log, run, write_csv
from hetfx.paper.data import bush_prather, tomz_weeks
from hetfx.paper.data.raw import RawDataError
from hetfx.paper.data.summaries import StudyFactError
from hetfx.paper.params import ParamsError

STUDIES = {"tomz_weeks": tomz_weeks, "bush_prather": bush_prather}
ACQUIRED = Path("data/acquired")
OUT = Path("data/clean")


def outputs(study: str) -> list[Path]:
    return [OUT / f"{study}.parquet", OUT / f"{study}_summary.csv", OUT / f"{study}_checks.csv"]


def checks_table(result) -> pd.DataFrame:
    facts = pd.DataFrame(
        {
            "kind": "fact",
            "name": [f.name for f in result.facts],
            "value": [f.value for f in result.facts],
            "expected": [f.expected for f in result.facts],
        }
    )
    excluded = pd.DataFrame(
        {
            "kind": "exclusion",
            "name": result.exclusions["reason"],
            "value": result.exclusions["rows"],
            "expected": float("nan"),
        }
    )
    return pd.concat([facts, excluded], ignore_index=True)


def main(study: str) -> None:
    for path in outputs(study):  # never leave a previous run's files beside a failure
        path.unlink(missing_ok=True)
    params = load_params()
    raw_file = ACQUIRED / getattr(params.clean, study).file
    result = STUDIES[study].clean(raw_file)
    log(f"clean_{study}", result.report())
    OUT.mkdir(parents=True, exist_ok=True)
    data_path, summary_path, checks_path = outputs(study)
    result.data.to_parquet(data_path, index=False)
    write_csv(result.summary(), summary_path)
    write_csv(checks_table(result), checks_path)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in STUDIES:
        sys.exit(f"usage: python analysis/clean.py {{{','.join(STUDIES)}}}")
    name = sys.argv[1]
    run(
        f"clean_{name}",
        lambda: main(name),
        (RawDataError, StudyFactError, ParamsError, FileNotFoundError),
    )
