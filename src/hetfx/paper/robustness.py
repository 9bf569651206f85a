"""Specification and robustness checks of the Tomz-Weeks condition model.

The paper's M1 leaves the condition factors' main effects out of the outcome equation while
its OLS comparator has them, so each group effect can absorb its condition's baseline
(control-arm) deviation (``replication-spec.md`` section 6.4). This module fits the
variants a referee would try and turns them into small tidy tables:

* :func:`condition_variants` -- the 32 condition effects under saturated OLS, additive OLS,
  the published M1, M1 with main effects, the additive heterogeneity equation with and without
  main effects, and (read from A1) pooled baselines;
* :func:`spread_table` -- their spread and where each puts the most negative OLS conditions;
* :func:`sign_disagreements` -- how often two models give a condition opposite signs;
* :func:`prior_sensitivity` -- the prior on ``sigma_theta``;
* :func:`gaussian_log_likelihood`, :func:`loo_table` -- PSIS-LOO across specifications;
* :func:`predictive_check` -- observed vs predicted support by condition and arm.

Every function takes data frames and fitted objects; none reads or writes files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hetfx.paper.params import LambdaSettings, LogitSettings, VaryingSettings
from hetfx.paper.studies import (
    CONDITION_FACTORS,
    M1_CONTROLS,
    Sampler,
    fit_tomz_weeks,
    lambda_settings,
    varying_settings,
)

if TYPE_CHECKING:
    from hetfx.paper.params import Gate, Models, Robustness, ScaleSpec

__all__ = [
    "Variant",
    "CONDITION_VARIANTS",
    "condition_variants",
    "spread_table",
    "sign_disagreements",
    "prior_sensitivity",
    "gaussian_log_likelihood",
    "with_log_likelihood",
    "loo_table",
    "predictive_check",
    "RobustnessResults",
    "run_checks",
    "COARSE_VARIANTS",
]

KEYS = ["regime", "stakes", "costs", "region"]


@dataclass(frozen=True)
class Variant:
    """One specification of the condition model.

    Attributes
    ----------
    name : str
        Short identifier (a column or row name in the outputs).
    label : str
        What a reader sees in tables and figures.
    model : str
        ``"m1"`` (lambda model), ``"ols"`` (fixed-effects interactions) or ``"a1"``
        (varying intercept and slope).
    settings : mapping
        Overrides of the model's settings: fields of
        :class:`~hetfx.paper.params.LambdaSettings` (``main_effects``, ``effect``,
        ``family``, ``sigma_theta``) for ``"m1"``, or, for OLS, the modifiers formula under
        ``"modifiers"``.
    keys : tuple of str, optional
        The factors that define the groups (default the four condition factors).
    """

    name: str
    label: str
    model: str
    settings: Mapping[str, Any]
    keys: tuple[str, ...] | None = None

    @property
    def bayesian(self) -> bool:
        return self.model != "ols"


CONDITION_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "ols_saturated", "Saturated OLS", "ols", {"modifiers": "regime*stakes*costs*region_txt"}
    ),
    Variant(
        "ols_additive", "Additive OLS", "ols", {"modifiers": "regime + stakes + costs + region_txt"}
    ),
    Variant("m1_published", "M1 as published (no main effects)", "m1", {}),
    Variant("m1_main_effects", "M1 with main effects", "m1", {"main_effects": True}),
    Variant("additive", "Additive Z, no main effects", "m1", {"effect": "additive"}),
    Variant(
        "additive_main_effects",
        "Additive Z with main effects",
        "m1",
        {"effect": "additive", "main_effects": True},
    ),
    Variant("pooled_baselines", "Additive Z, pooled baselines (A1)", "a1", {}),
    Variant("logit_published", "Logit, M1 as published", "m1", {"family": "bernoulli"}),
    Variant(
        "logit_additive_main_effects",
        "Logit, additive Z with main effects",
        "m1",
        {"family": "bernoulli", "effect": "additive", "main_effects": True},
    ),
)


def _ols(frame: pd.DataFrame, modifiers: str, keys: Sequence[str], group: str):
    from hetfx.models.saturated_ols import fit_saturated_ols

    return fit_saturated_ols(
        frame,
        "force",
        "alliance",
        modifiers,
        M1_CONTROLS,
        group=group,
        keys=list(keys),
        reference={"region_txt": "Africa"} if "region_txt" in keys else None,
    )


def fit_variant(
    tw: pd.DataFrame,
    variant: Variant,
    coding: str,
    settings: LambdaSettings | VaryingSettings | Mapping | None,
    sampler: Sampler,
    logit: LogitSettings | Mapping | None = None,
):
    """Fit one :class:`Variant` on the cleaned Tomz-Weeks frame.

    ``settings`` is the model's params section: ``models.m1`` as a
    :class:`~hetfx.paper.params.LambdaSettings` or ``models.a1`` as a
    :class:`~hetfx.paper.params.VaryingSettings` (or a mapping of their fields). The
    variant's own settings override it, and for the logit variants (``family: bernoulli``)
    ``logit`` (:class:`~hetfx.paper.params.LogitSettings` or a mapping of its fields)
    overrides both (prior SDs on the log-odds scale, engine settings).
    """
    keys = list(variant.keys or CONDITION_FACTORS)
    if variant.model == "ols":
        from hetfx.paper.studies import coding_frame

        frame = coding_frame(tw, coding)
        if keys != CONDITION_FACTORS:
            frame = frame.assign(treat_group=frame[keys].astype(str).agg("_".join, axis=1))
        return _ols(frame, variant.settings["modifiers"], keys, "treat_group")
    if variant.model != "m1":  # A1
        a1 = varying_settings(settings).model_dump(exclude_none=True)
        merged = varying_settings(a1 | dict(variant.settings))
        return fit_tomz_weeks(tw, variant.model, coding, merged, sampler)
    lam = lambda_settings(settings).updated(**variant.settings)
    if lam.family == "bernoulli" and logit is not None:
        if not isinstance(logit, LogitSettings):
            logit = LogitSettings.model_validate(dict(logit))
        lam = lam.with_logit(logit)
    return fit_tomz_weeks(tw, "m1", coding, lam, sampler, keys=keys)


def condition_variants(
    fits: Mapping[str, object], variants: Sequence[Variant] = CONDITION_VARIANTS
) -> pd.DataFrame:
    """Long table of condition effects: one row per condition and variant.

    Parameters
    ----------
    fits : mapping
        Variant name to fitted object (anything with ``group_effects()``).
    variants : sequence of Variant
        Which variants, in the order of the output.

    Returns
    -------
    pandas.DataFrame
        ``variant``, ``label``, ``treat_group``, the condition keys, ``n_obs``,
        ``estimate``, ``q025``, ``q975``.
    """
    rows = []
    for v in variants:
        g = fits[v.name].group_effects().rename(columns={"region_txt": "region"})
        label_col = "treat_group" if "treat_group" in g else g.columns[0]
        keys = [k for k in KEYS if k in g]
        part = g[[label_col, *keys, "n_obs", "estimate", "q025", "q975"]].rename(
            columns={label_col: "treat_group"}
        )
        rows.append(part.assign(variant=v.name, label=v.label))
    out = pd.concat(rows, ignore_index=True)
    return out[
        [
            "variant",
            "label",
            "treat_group",
            *[k for k in KEYS if k in out],
            "n_obs",
            "estimate",
            "q025",
            "q975",
        ]
    ]


def _wide(effects: pd.DataFrame) -> pd.DataFrame:
    return effects.pivot(index="treat_group", columns="variant", values="estimate")


def spread_table(
    effects: pd.DataFrame,
    reference: str = "ols_saturated",
    published: str = "m1_published",
    n_negative: int = 3,
) -> pd.DataFrame:
    """Spread of the condition effects per variant and where the most negative reference
    conditions land.

    Returns
    -------
    pandas.DataFrame
        One row per variant: ``sd``, ``min``, ``max``, ``range``, correlation with the
        reference (``cor_ols``) and with the published model (``cor_published``), and
        ``neg1..negK``: the variant's estimates of the ``n_negative`` conditions with the
        most negative reference estimates (their labels in ``neg_conditions``).
    """
    wide = _wide(effects)
    order = list(dict.fromkeys(effects["variant"]))
    lowest = wide[reference].nsmallest(n_negative).index.tolist()
    labels = effects.drop_duplicates("variant").set_index("variant")["label"]
    rows = []
    for v in order:
        est = wide[v]
        row = {
            "variant": v,
            "label": labels[v],
            "sd": est.std(ddof=1),
            "min": est.min(),
            "max": est.max(),
            "range": est.max() - est.min(),
            "cor_ols": est.corr(wide[reference]),
            "cor_published": est.corr(wide[published]),
        }
        for i, cond in enumerate(lowest, start=1):
            row[f"neg{i}"] = est[cond]
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["neg_conditions"] = lowest
    return out


def sign_disagreements(effects: pd.DataFrame) -> pd.DataFrame:
    """For every pair of variants, the number of conditions whose estimates have opposite
    signs (a zero estimate counts as neither sign)."""
    wide = _wide(effects)
    order = list(dict.fromkeys(effects["variant"]))
    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            opposite = int((np.sign(wide[a]) * np.sign(wide[b]) < 0).sum())
            rows.append(
                {
                    "variant_a": a,
                    "variant_b": b,
                    "opposite_signs": opposite,
                    "conditions": int(wide[[a, b]].notna().all(axis=1).sum()),
                }
            )
    return pd.DataFrame(rows)


def prior_sensitivity(groups: Mapping[str, pd.DataFrame], default: str) -> pd.DataFrame:
    """Largest change of a group median and correlation with the default prior's medians.

    Parameters
    ----------
    groups : mapping
        Prior name to the fit's ``group_effects()`` (same groups, same order of labels).
    default : str
        The name of the reference prior.
    """
    base = groups[default].set_index(groups[default].columns[0])["estimate"]
    rows = []
    for name, g in groups.items():
        est = g.set_index(g.columns[0])["estimate"].reindex(base.index)
        rows.append(
            {
                "prior": name,
                "max_abs_change": float((est - base).abs().max()),
                "cor_default": float(est.corr(base)),
                "sd": float(est.std(ddof=1)),
                "min": float(est.min()),
                "max": float(est.max()),
            }
        )
    return pd.DataFrame(rows)


def gaussian_log_likelihood(fit) -> np.ndarray:
    """Pointwise log-likelihood ``(chain, draw, obs)`` of a Gaussian lambda-model fit.

    ``log N(y_i | lambda_g[i] T_i + X_i beta, sigma)`` at every posterior draw.
    """
    from hetfx.models.lambda_model import pointwise_loglik

    post = fit.idata.posterior
    d = fit.data
    beta = post["beta"].transpose("chain", "draw", "control").values
    chains, draws = beta.shape[:2]
    lam = post["lambda"].transpose("chain", "draw", "group").values
    sigma = post["sigma"].transpose("chain", "draw").values
    ll, _ = pointwise_loglik(
        beta.reshape(chains * draws, -1),
        lam.reshape(chains * draws, -1),
        sigma.reshape(-1),
        d.X.to_numpy(dtype=float),
        d.treat,
        d.group,
        d.y,
    )
    return ll.reshape(chains, draws, -1)


def with_log_likelihood(fit):
    """The fit's InferenceData with a ``log_likelihood`` group (variable ``y``, dim ``obs``)."""
    import arviz as az

    ll = gaussian_log_likelihood(fit)
    extra = az.from_dict(log_likelihood={"y": ll}, dims={"y": ["obs"]})
    idata = fit.idata.copy()
    idata.extend(extra)
    return idata


def loo_table(idatas: Mapping[str, object], labels: Mapping[str, str]) -> pd.DataFrame:
    """PSIS-LOO (arviz) of each specification with its Pareto k-hat summary.

    Parameters
    ----------
    idatas : mapping
        Variant name to an InferenceData with a posterior and a ``log_likelihood`` group
        (same observations in every entry; see :func:`with_log_likelihood`).
    labels : mapping
        Variant name to label.

    Returns
    -------
    pandas.DataFrame
        In the order of ``log_liks``: ``variant``, ``label``, ``elpd_loo``, ``se``,
        ``p_loo``, ``elpd_diff`` and ``diff_se`` (to the best, from ``arviz.compare``),
        ``max_k`` and ``n_k_above_0_7`` (Pareto k-hat of the PSIS weights).
    """
    import arviz as az

    compared = az.compare(idatas, ic="loo")
    rows = []
    for name, idata in idatas.items():
        k = np.asarray(az.loo(idata, pointwise=True).pareto_k)
        c = compared.loc[name]
        rows.append(
            {
                "variant": name,
                "label": labels[name],
                "elpd_loo": float(c["elpd_loo"]),
                "se": float(c["se"]),
                "p_loo": float(c["p_loo"]),
                "elpd_diff": float(c["elpd_diff"]),
                "diff_se": float(c["dse"]),
                "max_k": float(k.max()),
                "n_k_above_0_7": int((k > 0.7).sum()),
            }
        )
    return pd.DataFrame(rows)


def predictive_check(
    fit, conditions: pd.Series, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Observed vs posterior predictive mean support by condition and arm.

    For every draw, the replicated mean of ``y`` in a cell (condition x arm, ``n`` rows) is
    the mean of the cell's linear predictors plus ``N(0, sigma / sqrt(n))``, the mean of
    ``n`` independent Gaussian errors.

    Parameters
    ----------
    fit : LambdaFit
        A Gaussian lambda-model fit.
    conditions : pandas.Series
        The condition label of every row of the fit's data.
    seed : int
        Seed of the replicated errors.
    level : float
        Central interval of the replicated means.

    Returns
    -------
    pandas.DataFrame
        ``condition``, ``arm`` (0 control, 1 treated), ``n``, ``observed``, ``predicted``
        (posterior predictive median), ``lower``, ``upper``, ``inside`` (observed within the
        interval).
    """
    post = fit.idata.posterior
    d = fit.data
    beta = post["beta"].stack(s=("chain", "draw")).transpose("s", "control").values
    lam = post["lambda"].stack(s=("chain", "draw")).transpose("s", "group").values
    sigma = post["sigma"].stack(s=("chain", "draw")).values
    X = d.X.to_numpy(dtype=float)
    cond = np.asarray(conditions)
    arm = (d.treat > 0).astype(int)
    rng = np.random.default_rng(seed)
    a = (1 - level) / 2
    rows = []
    cells = pd.DataFrame({"condition": cond, "arm": arm}).groupby(["condition", "arm"]).indices
    for (c, t), idx in sorted(cells.items()):
        mu = (beta @ X[idx].T + lam[:, d.group[idx]] * d.treat[idx][None, :]).mean(axis=1)
        rep = mu + sigma / np.sqrt(len(idx)) * rng.standard_normal(len(sigma))
        lo, med, hi = np.quantile(rep, [a, 0.5, 1 - a])
        obs = float(d.y[idx].mean())
        rows.append(
            {
                "condition": c,
                "arm": int(t),
                "n": len(idx),
                "observed": obs,
                "predicted": float(med),
                "lower": float(lo),
                "upper": float(hi),
                "inside": bool(lo <= obs <= hi),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the checks
#: Coarser groups: the eight regime x stakes x costs conditions (region dropped).
COARSE_KEYS = ("regime", "stakes", "costs")
COARSE_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "ols_saturated", "Saturated OLS", "ols", {"modifiers": "regime*stakes*costs"}, COARSE_KEYS
    ),
    Variant("m1_published", "M1 as published (no main effects)", "m1", {}, COARSE_KEYS),
    Variant("m1_main_effects", "M1 with main effects", "m1", {"main_effects": True}, COARSE_KEYS),
)


@dataclass
class RobustnessResults:
    """The tables of :func:`run_checks` (each a tidy frame, written as one CSV)."""

    condition_effects: pd.DataFrame
    spread: pd.DataFrame
    signs: pd.DataFrame
    prior: pd.DataFrame
    coarse: pd.DataFrame
    loo: pd.DataFrame
    ppc: pd.DataFrame
    diagnostics: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name to frame, in a fixed order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _gate(fit, name: str, gate: Gate) -> pd.DataFrame:
    from hetfx.inference import check_diagnostics

    diag = fit.diagnostics_record
    check_diagnostics(
        diag,
        max_r_hat=gate.max_r_hat,
        min_ess_bulk=gate.min_ess_bulk,
        allow_divergences=gate.max_divergences,
        advice=f"robustness fit {name!r}: raise models.draws or change its engine settings",
    )
    return fit.diagnostics().assign(fit=name)


@dataclass
class _Fitter:
    """Fits variants under one coding and sampler; every Bayesian fit must pass ``gate``
    (its diagnostics are collected in ``diagnostics``)."""

    tw: pd.DataFrame
    coding: str
    settings: Mapping[str, Any]
    sampler: Sampler
    gate: Gate
    diagnostics: list = dataclasses.field(default_factory=list)

    def __call__(self, variant: Variant, name: str | None = None, logit=None):
        settings = self.settings.get(variant.model)
        fit = fit_variant(self.tw, variant, self.coding, settings, self.sampler, logit)
        if variant.bayesian:
            self.diagnostics.append(_gate(fit, name or variant.name, self.gate))
        return fit


def run_checks(
    tw: pd.DataFrame,
    models: Models,
    checks: Robustness,
    progress=lambda message: None,
) -> RobustnessResults:
    """Fit every variant and build the robustness tables.

    Parameters
    ----------
    tw : pandas.DataFrame
        The cleaned Tomz-Weeks frame.
    models : hetfx.paper.params.Models
        ``params.yaml``'s ``models`` section, validated: the sampler (``seed``, ``chains``,
        ``draws``, ``tune``), the settings of M1 and A1, and the diagnostic ``gate`` every
        Bayesian fit must pass.
    checks : hetfx.paper.params.Robustness
        ``params.yaml``'s ``robustness`` section, validated: the ``coding`` of the Democrat
        indicator; ``sigma_theta_priors`` (name to scale prior; the first is the default)
        under which every lambda-model variant of ``prior_variants`` is refitted; the
        ``logit`` settings of the logit variants (``gamma_sd``, ``beta_sd``,
        ``target_accept``), which are fitted by the default engine of
        :func:`hetfx.models.bernoulli.fit_bernoulli_lambda`, ``qmc`` (deterministic: the
        same summaries on any CPU to rounding), gated on its Pareto k-hat and weight ESS.
    progress : callable
        Receives a line of text per fit.
    """
    from hetfx.paper.studies import coding_frame

    _check_prior_variants(checks.prior_variants)
    sampler = Sampler.from_params(models)
    settings = {"m1": models.m1, "a1": models.a1}
    fitter = _Fitter(tw, checks.coding, settings, sampler, models.gate)
    fits = {}
    for v in CONDITION_VARIANTS:
        fits[v.name] = fitter(v, logit=checks.logit)
        progress(f"fitted {v.label}")
    effects = condition_variants(fits)
    spread = spread_table(effects)
    neg = spread.attrs["neg_conditions"]
    spread = spread.assign(neg_conditions=";".join(neg))
    prior = _prior_rows(fits, checks.sigma_theta_priors, checks.prior_variants, fitter, progress)
    coarse_fits = {v.name: fitter(v, f"coarse {v.name}") for v in COARSE_VARIANTS}
    coarse = condition_variants(coarse_fits, COARSE_VARIANTS)
    progress("fitted the eight coarser conditions")
    conditions = coding_frame(tw, checks.coding)["treat_group"]
    loo, ppc = _likelihood_checks(fits, conditions, sampler, progress)
    diagnostics = pd.concat(fitter.diagnostics, ignore_index=True)
    diagnostics = diagnostics[["fit", *[c for c in diagnostics.columns if c != "fit"]]]
    return RobustnessResults(
        effects, spread, sign_disagreements(effects), prior, coarse, loo, ppc, diagnostics
    )


def _check_prior_variants(prior_variants: Sequence[str]) -> None:
    """Every variant refitted under the priors must be a Gaussian lambda-model variant."""
    by_name = {v.name: v for v in CONDITION_VARIANTS}
    unknown = [
        n
        for n in prior_variants
        if by_name.get(n, Variant("", "", "", {})).model != "m1" or "family" in by_name[n].settings
    ]
    if unknown:
        names = [v.name for v in CONDITION_VARIANTS if v.model == "m1"]
        raise ValueError(
            f"prior variants {unknown} are not lambda-model variants; choose from {names}"
        )


def _prior_rows(
    fits: Mapping,
    sigma_theta_priors: Mapping[str, ScaleSpec],
    prior_variants: Sequence[str],
    fitter: _Fitter,
    progress,
) -> pd.DataFrame:
    """The prior sensitivity table: every prior variant refitted under every other prior."""
    by_name = {v.name: v for v in CONDITION_VARIANTS}
    prior_default = next(iter(sigma_theta_priors))
    prior_rows = []
    for name in prior_variants:
        v = by_name[name]
        groups = {}
        for prior, spec in sigma_theta_priors.items():
            if prior == prior_default:
                fit = fits[name]
            else:
                pv = Variant(
                    f"{name}@{prior}", v.label, v.model, {**v.settings, "sigma_theta": spec}
                )
                fit = fitter(pv)
            groups[prior] = fit.group_effects()
        prior_rows.append(prior_sensitivity(groups, prior_default).assign(variant=name))
        progress(f"prior sensitivity of {v.label}: {len(sigma_theta_priors)} priors")
    prior = pd.concat(prior_rows, ignore_index=True)
    return prior[["variant", *[c for c in prior.columns if c != "variant"]]]


def _likelihood_checks(
    fits: Mapping, conditions: pd.Series, sampler: Sampler, progress
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PSIS-LOO and the predictive check of the Gaussian lambda-model variants.

    They compare Gaussian likelihoods only (a Bernoulli mass and a Gaussian density of the
    same 0/1 outcome are not on one scale).
    """
    lambda_variants = [
        v for v in CONDITION_VARIANTS if v.model == "m1" and "family" not in v.settings
    ]
    loo = loo_table(
        {v.name: with_log_likelihood(fits[v.name]) for v in lambda_variants},
        {v.name: v.label for v in lambda_variants},
    )
    progress("PSIS-LOO of the lambda-model specifications")
    ppc = pd.concat(
        [
            predictive_check(fits[v.name], conditions, seed=sampler.seed).assign(variant=v.name)
            for v in lambda_variants
        ],
        ignore_index=True,
    )
    ppc = ppc[["variant", *[c for c in ppc.columns if c != "variant"]]]
    return loo, ppc
