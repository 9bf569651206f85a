"""The paper's models on its two studies: specifications as data, fits through one API.

Each model of ``replication-spec.md`` (sections 3, 4, 6) is a function of a cleaned frame, a
coding (``"published"`` or ``"corrected"``) and its settings, returning a fitted object
that answers ``group_effects()``, ``coefs()`` and (Bayesian fits) ``diagnostics()``:

========  =====================================================  =============================
model     specification                                          groups
========  =====================================================  =============================
``m1``     lambda model, Z = regime*stakes*costs*region           32 ``treat_group``
``m1_ols`` force ~ alliance*(regime*stakes*costs*region) + ctrls  32 ``treat_group``
``m2``     lambda model, Z = 1 + dem + rep + high_newsint +       ``het_group`` (24 occur)
           white + male
``m2_ols`` force ~ conditions + alliance*(dem+rep+...+male)      ``het_group``
``a1``     correlated varying intercept/slope by treat_group     32 ``treat_group``
``bp``     Bush-Prather, four correlated varying factors          observed profiles
========  =====================================================  =============================

``m1_main_effects`` and ``m2_main_effects`` are M1 and M2 with the grouping variables' main
effects in the outcome equation (replication spec section 6.4), as their OLS comparators have
them.

Categorical ``region`` uses R's default treatment coding (levels sorted, Africa the
reference), as brms did, so the gamma coefficients carry the same names and priors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hetfx.design import design as _design
from hetfx.design import groups as _groups
from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import LambdaFit, fit_lambda_model
from hetfx.models.saturated_ols import fit_saturated_ols
from hetfx.paper.cells import demographic_cells  # re-exported: Figure 8's cells

if TYPE_CHECKING:  # imported where used: it compiles numba kernels on import (seconds)
    from hetfx.models.varying_slopes import VaryingSlopesFit

__all__ = [
    "CODINGS",
    "TW_MODELS",
    "Sampler",
    "coding_frame",
    "bush_prather_frame",
    "fit_tomz_weeks",
    "fit_bush_prather",
    "demographic_cells",
    "scale_prior",
]

CODINGS = ("published", "corrected")
TW_MODELS = ("m1", "m1_ols", "m2", "m2_ols", "a1", "m1_main_effects", "m2_main_effects")
#: The specification fix of replication spec section 6.4: M1 and M2 with the grouping
#: variables' main effects in the outcome equation (``<model>_main_effects``).
MAIN_EFFECTS_SUFFIX = "_main_effects"
CONDITION_KEYS = ["regime", "stakes", "costs", "region"]
DEMOGRAPHIC_KEYS = ["dem", "rep", "high_newsint", "white", "male"]
BP_FACTORS = ["w2_vote_hill", "woman", "pol_engage", "invest_cond"]
M1_CONTROLS = ["white", "male", "hawk", "intl", "dem", "rep", "age", "ed4"]
M2_CONTROLS = ["regime", "stakes", "costs", "africa", "europe", "asia", "age", "ed4"]
A1_CONTROLS = ["white", "male", "hawk", "intl", "natl_sup"]
#: Conditions at which the M2-OLS effect is read (spec section 3): democracy, high stakes,
#: Eastern Europe (costs and the other regions at 0; irrelevant to an additive contrast).
M2_OLS_AT = {"regime": 1, "stakes": 1, "costs": 0, "asia": 0, "africa": 0, "europe": 1}


@dataclass(frozen=True)
class Sampler:
    """Posterior layout shared by every Bayesian fit."""

    seed: int = 12
    chains: int = 4
    draws: int = 1000
    tune: int = 1000


def scale_prior(spec: Mapping[str, Any] | ScalePrior) -> ScalePrior:
    """A :class:`ScalePrior` from its params.yaml form ``{kind, scale, nu}``."""
    if isinstance(spec, ScalePrior):
        return spec
    return ScalePrior(kind=spec["kind"], scale=float(spec["scale"]), nu=float(spec.get("nu", 3.0)))


def _check_coding(coding: str) -> None:
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


# ----------------------------------------------------------------------------- frames
def coding_frame(tw: pd.DataFrame, coding: str) -> pd.DataFrame:
    """Tomz-Weeks analysis frame under a coding of the Democrat indicator.

    Adds ``dem`` (``dem_published`` or ``dem_corrected``), ``het_group`` and ``party``
    (Republican if rep, else Democrat if dem, else Independent) to the cleaned frame.
    """
    _check_coding(coding)
    missing = [c for c in (f"dem_{coding}", f"het_group_{coding}", "rep") if c not in tw]
    if missing:
        raise KeyError(f"cleaned Tomz-Weeks frame lacks columns {missing}")
    out = tw.copy()
    out["dem"] = out[f"dem_{coding}"].astype("int64")
    out["het_group"] = out[f"het_group_{coding}"]
    out["party"] = np.where(
        out["rep"] == 1, "Republican", np.where(out["dem"] == 1, "Democrat", "Independent")
    )
    return out


def bush_prather_frame(bp: pd.DataFrame, coding: str) -> pd.DataFrame:
    """Bush-Prather analysis rows: all 468 (published) or side-taking vignettes only."""
    _check_coding(coding)
    if coding == "published":
        return bp.reset_index(drop=True)
    return bp.loc[bp["treat_ipesidetaking"] == 1].reset_index(drop=True)


# ---------------------------------------------------------------------- Tomz-Weeks fits
def fit_tomz_weeks(
    tw: pd.DataFrame,
    model: str,
    coding: str,
    settings: Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
):
    """Fit one Tomz-Weeks model under one coding.

    Parameters
    ----------
    tw : pandas.DataFrame
        The cleaned Tomz-Weeks frame (``hetfx.paper.data.tomz_weeks.clean``).
    model : {"m1", "m1_ols", "m2", "m2_ols", "a1", "m1_main_effects", "m2_main_effects"}
        Which model (see module docstring); ``<model>_main_effects`` is M1 or M2 with the
        grouping variables' main effects in the outcome equation.
    coding : {"published", "corrected"}
        Coding of the Democrat indicator.
    settings : mapping, optional
        The model's section of ``params.yaml`` (priors, engine, target_accept).
    sampler : Sampler, optional
        Seed and posterior layout.

    Returns
    -------
    LambdaFit, SaturatedOLSFit or VaryingSlopesFit
    """
    if model not in TW_MODELS:
        raise ValueError(f"model must be one of {TW_MODELS}, got {model!r}")
    df = coding_frame(tw, coding)
    settings = dict(settings or {})
    sampler = sampler or Sampler()
    if model.endswith(MAIN_EFFECTS_SUFFIX):
        model = model.removesuffix(MAIN_EFFECTS_SUFFIX)
        settings["main_effects"] = True
    if model == "m1":
        return _fit_m1(df, settings, sampler)
    if model == "m2":
        return _fit_m2(df, settings, sampler)
    if model == "m1_ols":
        return fit_saturated_ols(
            df,
            "force",
            "alliance",
            "regime*stakes*costs*region_txt",
            M1_CONTROLS,
            group="treat_group",
            keys=["regime", "stakes", "costs", "region_txt"],
            reference={"region_txt": "Africa"},
        )
    if model == "m2_ols":
        return fit_saturated_ols(
            df,
            "force",
            "alliance",
            DEMOGRAPHIC_KEYS,
            ["regime", "stakes", "costs", "asia", "europe", "africa"],
            group="het_group",
            keys=DEMOGRAPHIC_KEYS,
            at=M2_OLS_AT,
        )
    return _fit_a1(df, settings, sampler)


def _lambda_kwargs(settings: Mapping[str, Any], sampler: Sampler) -> dict:
    return dict(
        engine=settings.get("engine", "quadrature"),
        gamma_sd=float(settings.get("gamma_sd", 1.0)),
        beta_sd=float(settings.get("beta_sd", 1.0)),
        sigma_prior=scale_prior(settings.get("sigma", ScalePrior.brms_default())),
        sigma_theta_prior=scale_prior(settings.get("sigma_theta", ScalePrior.brms_default())),
        target_accept=float(settings.get("target_accept", 0.8)),
        chains=sampler.chains,
        draws=sampler.draws,
        tune=sampler.tune,
        seed=sampler.seed,
    )


#: The factors that define M1's groups (the 32 experimental conditions).
CONDITION_FACTORS = ["regime", "stakes", "costs", "region_txt"]


def _fit_m1(df: pd.DataFrame, settings, sampler) -> LambdaFit:
    """M1 and its specification variants (``settings``):

    ``main_effects`` (default False, as published)
        Put the condition factors' main effects (the non-intercept columns of
        ``regime*stakes*costs*region``) into the outcome equation, as the OLS comparator has
        them; without them each group effect absorbs its condition's baseline deviation
        (replication spec section 6.4).
    ``effect`` ("saturated", default, or "additive")
        The heterogeneity equation's design.
    ``family`` ("gaussian", default, or "bernoulli")
        The likelihood: the published linear probability model, or a logit model fitted by
        NUTS (:func:`_fit_logit`).
    ``keys`` (default the four condition factors)
        The factors that define the groups; ``["regime", "stakes", "costs"]`` gives the eight
        coarser conditions (region then plays no part).
    """
    keys_used = list(settings.get("keys", CONDITION_FACTORS))
    effect = settings.get("effect", "saturated")
    if effect not in ("saturated", "additive"):
        raise ValueError(f"effect must be 'saturated' or 'additive', got {effect!r}")
    Z_formula = "*".join(keys_used) if effect == "saturated" else "1 + " + " + ".join(keys_used)
    if keys_used != CONDITION_FACTORS:
        df = df.assign(treat_group=df[keys_used].astype(str).agg("_".join, axis=1))
    codes, keys = _groups(df, "treat_group", keys_used)
    Z = _design(Z_formula, keys)
    controls = "1 + " + " + ".join(M1_CONTROLS)
    if settings.get("main_effects", False):
        controls += " + " + "*".join(keys_used)
    X = _design(controls, df)
    gk = keys.rename(columns={"region_txt": "region"})
    if settings.get("family", "gaussian") == "bernoulli":
        return _fit_logit(df, X, codes, Z, gk, settings, sampler)
    return fit_lambda_model(
        df["force"],
        df["alliance"],
        X,
        codes,
        Z,
        group_keys=gk,
        group_name="treat_group",
        **_lambda_kwargs(settings, sampler),
    )


def _fit_logit(df: pd.DataFrame, X, codes, Z, keys, settings, sampler):
    """The same two equations with a Bernoulli (logit) likelihood for the binary ``force``,
    sampled by nutpie; group effects are average marginal effects on the probability scale.
    ``gamma_sd`` and ``beta_sd`` are then prior SDs on the log-odds scale."""
    from hetfx.models.bernoulli import fit_bernoulli_lambda

    kw = _lambda_kwargs(settings, sampler)
    return fit_bernoulli_lambda(
        df["force"],
        df["alliance"],
        X,
        codes,
        Z,
        group_keys=keys,
        group_name="treat_group",
        gamma_sd=kw["gamma_sd"],
        beta_sd=kw["beta_sd"],
        sigma_theta_prior=kw["sigma_theta_prior"],
        chains=kw["chains"],
        draws=kw["draws"],
        tune=kw["tune"],
        target_accept=kw["target_accept"],
        seed=kw["seed"],
    )


def _fit_m2(df: pd.DataFrame, settings, sampler) -> LambdaFit:
    """M2; ``settings["main_effects"]`` (default False, as published) adds dem, rep,
    high_newsint, white and male to the outcome equation."""
    codes, keys = _groups(df, "het_group", [*DEMOGRAPHIC_KEYS, "party"])
    Z = _design("1 + " + " + ".join(DEMOGRAPHIC_KEYS), keys)
    controls = list(M2_CONTROLS)
    if settings.get("main_effects", False):
        controls += DEMOGRAPHIC_KEYS
    X = _design("1 + " + " + ".join(controls), df)
    return fit_lambda_model(
        df["force"],
        df["alliance"],
        X,
        codes,
        Z,
        group_keys=keys,
        group_name="het_group",
        **_lambda_kwargs(settings, sampler),
    )


def _varying_kwargs(settings: Mapping[str, Any], sampler: Sampler) -> dict:
    intercept = settings.get("intercept", "flat")
    if intercept == "flat":
        intercept_prior = ("flat",)
    elif isinstance(intercept, Mapping) and intercept.get("kind") == "normal":
        intercept_prior = ("normal", float(intercept.get("loc", 0.0)), float(intercept["scale"]))
    else:
        raise ValueError(f"intercept prior must be 'flat' or a normal, got {intercept!r}")
    return dict(
        engine=settings.get("engine", "collapsed"),
        b_sd=float(settings.get("b_sd", 0.5)),
        intercept_prior=intercept_prior,
        sd_prior=scale_prior(settings.get("sd", {"kind": "half_normal", "scale": 1.0})),
        sigma_prior=scale_prior(settings.get("sigma", ScalePrior.brms_default())),
        lkj_eta=float(settings.get("lkj_eta", 1.0)),
        target_accept=float(settings.get("target_accept", 0.8)),
        maxdepth=int(settings.get("max_treedepth", 10)),
        qmc_m=int(settings.get("qmc_points_log2", 14)),
        chains=sampler.chains,
        draws=sampler.draws,
        tune=sampler.tune,
        seed=sampler.seed,
    )


def _fit_a1(df: pd.DataFrame, settings, sampler) -> VaryingSlopesFit:
    """Appendix A1: ``force ~ controls + alliance*(regime+stakes+costs+region) +
    (1 + alliance | treat_group)``; the effect of alliance per treat_group.

    ``settings["controls"]`` overrides the additive controls (the brms fixture omits
    ``natl_sup``). The controls enter additively, so the effect does not depend on the
    values they are held at (the spec's sample medians).
    """
    from hetfx.models.varying_slopes import fit_varying_slopes

    controls = list(settings.get("controls", A1_CONTROLS))
    X = _design(
        "1 + " + " + ".join(controls) + " + alliance*(regime + stakes + costs + region_txt)", df
    )
    _, keys = _groups(df, "treat_group", ["regime", "stakes", "costs", "region_txt"])
    profiles = keys.reset_index()
    # contrast x(alliance=1) - x(alliance=0): the alliance column and its interactions
    one = _design("alliance*(regime + stakes + costs + region_txt)", profiles.assign(alliance=1))
    zero = _design("alliance*(regime + stakes + costs + region_txt)", profiles.assign(alliance=0))
    contrast = (one - zero).loc[:, lambda f: [c for c in f.columns if "alliance" in c]]
    profiles = profiles.rename(columns={"region_txt": "region"})
    return fit_varying_slopes(
        df["force"],
        df["alliance"],
        X,
        df[["treat_group"]],
        profiles=profiles,
        contrast=contrast,
        **_varying_kwargs(settings, sampler),
    )


# ---------------------------------------------------------------------- Bush-Prather fit
def fit_bush_prather(
    bp: pd.DataFrame,
    coding: str,
    settings: Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
) -> VaryingSlopesFit:
    """Appendix A2: ``ipe_support ~ 1 + college_educ + employ_dum + sum_k (1 +
    treat_germrus | factor_k)`` over w2_vote_hill, pol_engage, invest_cond, woman.

    The effect of Germany vs Russia per observed combination of the four factors is the
    sum of the four varying slopes (no population-level slope, as published); it does not
    depend on college_educ and employ_dum (held at 1 by the spec).
    """
    from hetfx.models.varying_slopes import fit_varying_slopes

    df = bush_prather_frame(bp, coding)
    settings = dict(settings or {})
    sampler = sampler or Sampler()
    X = _design("1 + college_educ + employ_dum", df)
    factors = df[BP_FACTORS].astype("int64")
    profiles = factors.drop_duplicates().sort_values(BP_FACTORS).reset_index(drop=True)
    profiles.insert(0, "profile", profiles.astype(str).agg("_".join, axis=1))
    return fit_varying_slopes(
        df["ipe_support"],
        df["treat_germrus"],
        X,
        factors,
        profiles=profiles,
        contrast=None,
        **_varying_kwargs(settings, sampler),
    )
