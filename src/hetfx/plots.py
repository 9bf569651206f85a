"""Plots of a fit with the user's own labels (plotnine, the project's theme).

Every function takes a :class:`hetfx.results.Results` (or its ``group_effects``/``coefs``
frame) and returns a plotnine object; save it with ``plot.save(...)`` or :func:`save` (PNG at
300 dpi and SVG, byte-identical across runs). Nothing here knows the paper's variables: axis
titles come from the arguments (default: the outcome and treatment names of the fit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
from plotnine import (
    aes,
    coord_flip,
    element_blank,
    element_line,
    element_rect,
    element_text,
    facet_wrap,
    geom_abline,
    geom_hline,
    geom_point,
    geom_pointrange,
    geom_segment,
    ggplot,
    labs,
    theme,
    theme_bw,
)

__all__ = ["plot_group_effects", "plot_coefs", "plot_shrinkage", "theme_hetfx", "save"]

_BLUE = "#0072B2"  # the hierarchical model's colour in the paper's figures


def theme_hetfx(base_size: float = 10):
    """The one theme of every figure: white panels, light grid, legend at the bottom."""
    return theme_bw(base_size=base_size) + theme(
        panel_grid_minor=element_blank(),
        panel_grid_major=element_line(color="#E5E5E5", size=0.4),
        strip_background=element_rect(fill="#F2F2F2", color="#BFBFBF"),
        legend_position="bottom",
        legend_title=element_blank(),
        plot_title=element_text(size=base_size + 1, ha="left"),
    )


def save(plot, stem: str | Path, width: float = 7, height: float = 5) -> list[Path]:
    """Write ``plot`` as ``<stem>.png`` (300 dpi) and ``<stem>.svg``; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    import matplotlib
    import matplotlib.pyplot as plt
    from plotnine.composition import Compose

    # byte-identical files on every run: no timestamp, fixed ids (so dvc.lock and git diff
    # change only when a figure does)
    with matplotlib.rc_context({"svg.hashsalt": "hetfx"}):
        for path in paths:
            meta = {"Date": None} if path.suffix == ".svg" else {"Software": None}
            if isinstance(plot, Compose):  # its save() ignores size and metadata
                figure = (plot + theme(figure_size=(width, height), dpi=300)).draw()
                figure.savefig(path, dpi=300, metadata=meta)
                plt.close(figure)
            else:
                plot.save(path, width=width, height=height, dpi=300, verbose=False, metadata=meta)
    return paths


def _effect_title(res, ylab: str | None, level: float) -> str:
    if ylab is not None:
        return ylab
    d = res.design
    scale = " (probability scale)" if getattr(res, "family", "") == "bernoulli" else ""
    return f"Effect of {d.treatment} on {d.outcome}{scale}, {level:.0%} interval"


def _labels(frame: pd.DataFrame, res, label) -> pd.Series:
    if label is None:
        return frame[res.group_name].astype(str)
    if callable(label):
        return frame.apply(label, axis=1).astype(str)
    if isinstance(label, Mapping):
        return frame[res.group_name].map(lambda v: label.get(v, v)).astype(str)
    return frame[label].astype(str)


def plot_group_effects(
    res,
    level: float = 0.9,
    label: str | Callable | Mapping | None = None,
    ylab: str | None = None,
    title: str | None = None,
    sort: bool = True,
    facet: str | None = None,
):
    """Each group's effect (median) with its interval.

    Parameters
    ----------
    res : hetfx.results.Results
        A fit.
    level : float
        Interval probability.
    label : str, callable, mapping, optional
        Group labels: a column of ``group_effects()``, a function of its row, or a mapping
        from group label to text (default: the group label).
    ylab, title : str, optional
        Axis and plot titles (default: "Effect of <treatment> on <outcome>").
    sort : bool
        Order groups by their estimate.
    facet : str, optional
        Modifier to facet by.

    Returns
    -------
    plotnine.ggplot
        Save it with :func:`save` or ``plot.save(...)``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, hetfx
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
    ...                    "treat": rng.integers(0, 2, 600)})
    >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
    >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
    >>> p = plot_group_effects(res, level=0.9, ylab="Effect on support",
    ...                        label={"Dem": "Democrats", "Ind": "Independents",
    ...                               "Rep": "Republicans"})
    >>> sorted(p.data["label"])
    ['Democrats', 'Independents', 'Republicans']
    >>> p.labels.y
    'Effect on support'

    The same plot from the result: ``res.plot_group_effects(level=0.9, ...)``.
    """
    g = res.group_effects(level=level).copy()
    g["label"] = _labels(g, res, label)
    order = g.sort_values("estimate")["label"] if sort else g["label"][::-1]
    g["label"] = pd.Categorical(g["label"], list(dict.fromkeys(order)))
    p = _interval_plot(
        g, "estimate", "lower", "upper", _effect_title(res, ylab, level), title, size=0.4
    )
    if facet:
        p = p + facet_wrap(facet, scales="free_y")
    return p


def _interval_plot(data, y: str, ymin: str, ymax: str, ylab: str, title: str | None, **point):
    """One row per ``label``: point ``y`` and interval ``ymin``-``ymax``, a dashed zero line."""
    return (
        ggplot(data, aes("label", y))
        + geom_hline(yintercept=0, linetype="dashed", color="grey")
        + geom_pointrange(aes(ymin=ymin, ymax=ymax), color=_BLUE, **point)
        + coord_flip()
        + labs(x="", y=ylab, title=title or "")
        + theme_hetfx()
    )


def plot_coefs(
    res,
    equation: str | None = "effect",
    labels: Mapping[str, str] | None = None,
    ylab: str | None = None,
    title: str | None = None,
):
    """Coefficients (posterior mean, 95% interval) of one or both equations.

    Parameters
    ----------
    res : hetfx.results.Results or pandas.DataFrame
        A fit or its ``coefs()`` frame.
    equation : {"effect", "control", None}
        Which equation (None: both, faceted).
    labels : mapping, optional
        Term -> display name.

    Returns
    -------
    plotnine.ggplot

    Examples
    --------
    >>> import numpy as np, pandas as pd, hetfx
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
    ...                    "treat": rng.integers(0, 2, 600)})
    >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
    >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", baselines="additive",
    ...                 chains=2, draws=200, seed=1)
    >>> p = plot_coefs(res, equation="control", labels={"partyRep": "Republican"})
    >>> p.data["label"].tolist()
    ['Intercept', 'partyInd', 'Republican']
    """
    c = res.coefs() if hasattr(res, "coefs") else res
    c = c[c["equation"] != "scale"]
    if equation is not None:
        c = c[c["equation"] == equation]
    c = c.copy()
    c["label"] = c["term"].map(lambda t: (labels or {}).get(t, t))
    c["label"] = pd.Categorical(c["label"], list(dict.fromkeys(c["label"][::-1])))
    p = _interval_plot(
        c, "mean", "q025", "q975", ylab or "Coefficient (posterior mean, 95% interval)", title
    )
    if equation is None:
        p = p + facet_wrap("equation", scales="free_y")
    return p


def plot_shrinkage(
    res, ols, xlab: str | None = None, ylab: str | None = None, title: str | None = None
):
    """Hierarchical against OLS estimate per group, with the 45-degree line.

    Parameters
    ----------
    res : hetfx.results.Results
        The hierarchical fit.
    ols : hetfx.results.OLSResults or pandas.DataFrame
        OLS fit (e.g. :func:`hetfx.fit_ols`) or a frame with the group label column and
        ``estimate``.

    Returns
    -------
    plotnine.ggplot

    Examples
    --------
    >>> import numpy as np, pandas as pd, hetfx
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
    ...                    "treat": rng.integers(0, 2, 600)})
    >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
    >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
    >>> ols = hetfx.fit_ols(df, "y", "treat", ["party"])
    >>> p = plot_shrinkage(res, ols, xlab="OLS", ylab="Hierarchical")
    >>> p.data[["cell", "estimate_o", "estimate_h"]].round(2)
      cell  estimate_o  estimate_h
    0  Dem       -0.04       -0.07
    1  Ind       -0.11       -0.09
    2  Rep        0.55        0.55
    """
    h = res.group_effects()[[res.group_name, "estimate"]]
    o = ols.group_effects() if hasattr(ols, "group_effects") else ols
    if res.group_name not in o.columns:
        raise KeyError(f"the OLS frame has no {res.group_name!r} column to match groups by")
    o = o[[res.group_name, "estimate"]].copy()
    o[res.group_name] = o[res.group_name].astype(str)
    m = h.merge(o, on=res.group_name, suffixes=("_h", "_o"), validate="one_to_one")
    if len(m) != len(h):
        raise ValueError(f"{len(h) - len(m)} groups of the fit have no OLS estimate")
    eff = f"effect of {res.design.treatment}"
    return (
        ggplot(m, aes("estimate_o", "estimate_h"))
        + geom_abline(slope=1, intercept=0, linetype="dashed", color="grey")
        + geom_segment(aes(xend="estimate_o", yend="estimate_o"), color="#BBBBBB")
        + geom_point(color=_BLUE, size=2)
        + labs(
            x=xlab or f"OLS {eff}",
            y=ylab or f"Hierarchical {eff}",
            title=title or "Shrinkage toward the heterogeneity equation",
        )
        + theme_hetfx()
    )
