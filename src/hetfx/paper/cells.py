"""Figure 8's demographic cells (replication spec section 3).

Each of the 24 cells party x white x male x high_newsint takes the median of the M2 group
medians (and of their 10% and 90% quantiles) of the groups it holds; party is Republican if
rep = 1, else Democrat if dem = 1, else Independent. A module of its own so that both the fit
and figure stages (through :mod:`hetfx.paper.studies`) and the report use one definition without
importing each other.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["CELL_KEYS", "demographic_cells"]

CELL_KEYS = ["party", "white", "male", "high_newsint"]


def demographic_cells(groups: pd.DataFrame) -> pd.DataFrame:
    """Figure 8's cells: per party x white x male x high_newsint, the median of the group
    medians (and of their 10% and 90% quantiles) of M2's ``groups.csv``."""
    need = {"party", "white", "male", "high_newsint", "estimate", "q10", "q90", "n_obs"}
    missing = sorted(need - set(groups.columns))
    if missing:
        raise KeyError(f"M2 group effects lack columns {missing}")
    cells = groups.groupby(["high_newsint", "party", "white", "male"], as_index=False).agg(
        estimate=("estimate", "median"),
        q10=("q10", "median"),
        q90=("q90", "median"),
        n_obs=("n_obs", "sum"),
    )
    return cells[["high_newsint", "party", "white", "male", "n_obs", "estimate", "q10", "q90"]]
