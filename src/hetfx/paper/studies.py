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

Every model goes through the public front end, from its specification alone (modifiers or
factors, controls, effect formula, main effects, priors): M1, M2 and their variants through
:func:`hetfx.fit`, the OLS comparators through :func:`hetfx.fit_ols`, the appendix models A1
and Bush-Prather (correlated varying intercepts and slopes) through
:func:`hetfx.fit_varying_slopes`.

Categorical ``region`` uses R's default treatment coding (levels sorted, Africa the
reference), as brms did, so the gamma coefficients carry the same names and priors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hetfx.models.gaussian import ScalePrior
from hetfx.paper.cells import demographic_cells  # re-exported: Figure 8's cells
from hetfx.paper.params import LambdaSettings, ScaleSpec, VaryingSettings
from hetfx.priors import Prior, Priors

if TYPE_CHECKING:
    from hetfx.results import VaryingSlopesResults

__all__ = [
    "CODINGS",
    "TW_MODELS",
    "Sampler",
    "coding_frame",
    "bush_prather_frame",
    "fit_tomz_weeks",
    "fit_bush_prather",
    "lambda_priors",
    "lambda_settings",
    "model_settings",
    "varying_priors",
    "varying_settings",
    "demographic_cells",
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
#: Additive controls of M2-OLS: the conditions. The spec reads its effect at democracy, high
#: stakes, Eastern Europe; the controls cancel in the contrast, so any condition gives it.
M2_OLS_CONTROLS = ["regime", "stakes", "costs", "asia", "europe", "africa"]


@dataclass(frozen=True)
class Sampler:
    """Posterior layout shared by every Bayesian fit."""

    seed: int = 12
    chains: int = 4
    draws: int = 1000
    tune: int = 1000

    @classmethod
    def from_params(cls, models) -> Sampler:
        """The layout of ``params.yaml``'s ``models`` section (a validated
        :class:`hetfx.paper.params.Models`)."""
        return cls(seed=models.seed, chains=models.chains, draws=models.draws, tune=models.tune)


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
def scale_spec(prior: ScalePrior) -> ScaleSpec:
    """The ``params.yaml`` form of a scale prior."""
    return ScaleSpec(kind=prior.kind, scale=prior.scale, nu=prior.nu)


def lambda_settings(settings: LambdaSettings | Mapping[str, Any] | None = None) -> LambdaSettings:
    """A lambda model's settings as the validated :class:`~hetfx.paper.params.LambdaSettings`:
    given as such (the pipeline), or a mapping of some of its fields, validated here once; the
    others default to the quadrature engine, N(0, 1) coefficients, brms's default prior
    (:meth:`ScalePrior.brms_default <hetfx.models.gaussian.ScalePrior.brms_default>`) on both
    scales and ``target_accept`` 0.8."""
    if isinstance(settings, LambdaSettings):
        return settings
    brms = scale_spec(ScalePrior.brms_default())
    defaults = {
        "engine": "quadrature",
        "gamma_sd": 1.0,
        "beta_sd": 1.0,
        "sigma": brms,
        "sigma_theta": brms,
        "target_accept": 0.8,
    }
    return LambdaSettings.model_validate(defaults | dict(settings or {}))


def model_settings(model: str, settings=None) -> LambdaSettings | VaryingSettings | dict[str, Any]:
    """The settings a Tomz-Weeks model is fitted with (what :func:`fit_tomz_weeks` uses, and
    what a stage log should print).

    M1, M2 and their variants: :class:`~hetfx.paper.params.LambdaSettings` (see
    :func:`lambda_settings`), with ``main_effects`` True for the ``<model>_main_effects``
    variants. A1: :class:`~hetfx.paper.params.VaryingSettings` (see :func:`varying_settings`).
    The OLS comparators: an empty mapping.
    """
    base = model.removesuffix(MAIN_EFFECTS_SUFFIX)
    if base in ("m1", "m2"):
        out = lambda_settings(settings)
        return out.updated(main_effects=True) if model.endswith(MAIN_EFFECTS_SUFFIX) else out
    if base == "a1":
        return varying_settings(settings)
    return dict(settings or {})


def fit_tomz_weeks(
    tw: pd.DataFrame,
    model: str,
    coding: str,
    settings: LambdaSettings | Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
    *,
    keys: list[str] | None = None,
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
    settings : LambdaSettings or mapping, optional
        The model's section of ``params.yaml``: for M1, M2 and their variants a validated
        :class:`~hetfx.paper.params.LambdaSettings` (or a mapping of some of its fields),
        for A1 a mapping (priors, engine, target_accept).
    sampler : Sampler, optional
        Seed and posterior layout.
    keys : list of str, optional
        M1 only: the factors that define the groups (default the four condition factors;
        ``["regime", "stakes", "costs"]`` gives the eight coarser conditions).

    Returns
    -------
    hetfx.results.Results, hetfx.results.OLSResults or hetfx.results.VaryingSlopesResults
        M1, M2 and their variants through :func:`hetfx.fit`, the OLS comparators through
        :func:`hetfx.fit_ols`, A1 through :func:`hetfx.fit_varying_slopes`.
    """
    if model not in TW_MODELS:
        raise ValueError(f"model must be one of {TW_MODELS}, got {model!r}")
    df = coding_frame(tw, coding)
    settings = model_settings(model, settings)
    sampler = sampler or Sampler()
    model = model.removesuffix(MAIN_EFFECTS_SUFFIX)
    if model == "m1":
        return _fit_m1(df, settings, sampler, keys or CONDITION_FACTORS)
    if model == "m2":
        return _fit_m2(df, settings, sampler)
    if model in ("m1_ols", "m2_ols"):
        from hetfx.api import fit_ols

        # M1-OLS: the 32 conditions, saturated; M2-OLS: additive in the demographics, the
        # conditions as additive controls (they cancel in each group's contrast, so the
        # effect is the same at any condition, e.g. the spec's democracy/high stakes/Europe)
        m1 = model == "m1_ols"
        return fit_ols(
            df,
            "force",
            "alliance",
            CONDITION_FACTORS if m1 else DEMOGRAPHIC_KEYS,
            M1_CONTROLS if m1 else M2_OLS_CONTROLS,
            effect="saturated" if m1 else "additive",
            group="treat_group" if m1 else "het_group",
            missing="raise",
            baselines="fixed" if m1 else "additive",  # as published
        )
    return _fit_a1(df, settings, sampler)


def scale_prior(spec: ScaleSpec) -> Prior:
    """The library's :class:`hetfx.Prior` of a scale prior of ``params.yaml``."""
    if spec.kind == "half_normal":
        return Prior.half_normal(spec.scale)
    return Prior.half_student_t(spec.nu, spec.scale)


def lambda_priors(settings: LambdaSettings | Mapping[str, Any]) -> Priors:
    """The :class:`hetfx.Priors` of a lambda model's settings: gamma ~ N(0, gamma_sd), beta ~
    N(0, beta_sd), and the scale priors of ``sigma`` and ``sigma_theta`` (see
    :func:`lambda_settings` for the defaults of a mapping)."""
    settings = lambda_settings(settings)
    return Priors(
        effect=Prior.normal(settings.gamma_sd),
        control=Prior.normal(settings.beta_sd),
        sigma=scale_prior(settings.sigma),
        sigma_theta=scale_prior(settings.sigma_theta),
    )


def _fit_lambda(df: pd.DataFrame, settings: LambdaSettings, sampler: Sampler, **spec):
    """:func:`hetfx.fit` of ``force`` on ``alliance`` with the paper's priors and sampler.

    The published specifications leave the modifiers' main effects out (M1 also has a
    saturated Z) on purpose; the front end's warnings about that are silenced here only.
    """
    from hetfx.api import fit

    family = settings.family
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="main_effects=False", category=UserWarning)
        warnings.filterwarnings("ignore", message="Z has one column per cell", category=UserWarning)
        return fit(
            df,
            "force",
            "alliance",
            priors=lambda_priors(settings),
            family=family,
            # the logit model is fitted by its default engine whatever the Gaussian model's
            engine=settings.engine if family == "gaussian" else "auto",
            missing="raise",
            seed=sampler.seed,
            chains=sampler.chains,
            draws=sampler.draws,
            tune=sampler.tune,
            target_accept=settings.target_accept,
            **spec,
        )


#: The factors that define M1's groups (the 32 experimental conditions).
CONDITION_FACTORS = ["regime", "stakes", "costs", "region_txt"]


def _fit_m1(df: pd.DataFrame, settings: LambdaSettings, sampler: Sampler, keys: list[str]):
    """M1 and its specification variants (``settings``, ``keys``):

    ``main_effects`` (default False, as published)
        Put the condition factors' main effects (the non-intercept columns of
        ``regime*stakes*costs*region``) into the outcome equation, as the OLS comparator has
        them; without them each group effect absorbs its condition's baseline deviation
        (replication spec section 6.4).
    ``effect`` ("saturated", default, or "additive")
        The heterogeneity equation's design.
    ``family`` ("gaussian", default, or "bernoulli")
        The likelihood: the published linear probability model, or a logit model fitted by
        the qmc engine with group effects as average marginal effects on the probability
        scale (``gamma_sd`` and ``beta_sd`` are then prior SDs on the log-odds scale).
    ``keys`` (default the four condition factors)
        The factors that define the groups; ``["regime", "stakes", "costs"]`` gives the eight
        coarser conditions (region then plays no part).
    """
    keys = list(keys)
    effect = settings.effect
    if effect not in ("saturated", "additive"):
        raise ValueError(f"effect must be 'saturated' or 'additive', got {effect!r}")
    if keys != CONDITION_FACTORS:
        df = df.assign(treat_group=df[keys].astype(str).agg("_".join, axis=1))
    return _fit_lambda(
        df,
        settings,
        sampler,
        modifiers=keys,
        controls=M1_CONTROLS,
        effect=effect,
        group="treat_group",
        # main effects: one baseline per condition (all terms of regime*stakes*costs*region)
        main_effects="saturated" if settings.main_effects else False,
    )


def _fit_m2(df: pd.DataFrame, settings: LambdaSettings, sampler: Sampler):
    """M2; ``settings["main_effects"]`` (default False, as published) adds dem, rep,
    high_newsint, white and male to the outcome equation. ``party`` rides along as a
    modifier that no equation uses (it labels the groups of Figure 8)."""
    additive = " + ".join(DEMOGRAPHIC_KEYS)
    return _fit_lambda(
        df,
        settings,
        sampler,
        modifiers=[*DEMOGRAPHIC_KEYS, "party"],
        controls=M2_CONTROLS,
        effect=additive,
        group="het_group",
        main_effects=additive if settings.main_effects else False,
    )


def varying_settings(
    settings: VaryingSettings | Mapping[str, Any] | None = None,
) -> VaryingSettings:
    """A varying-slopes model's settings as the validated
    :class:`~hetfx.paper.params.VaryingSettings`: given as such (the pipeline), or a mapping of
    some of its fields, validated here once; the others default to the ``auto`` engine,
    N(0, 0.5) coefficients, a flat intercept, half-normal(1) SDs of the varying intercepts
    and slopes, brms's default prior on ``sigma``, LKJ(1) and ``target_accept`` 0.8."""
    if isinstance(settings, VaryingSettings):
        return settings
    defaults = {
        "engine": "auto",
        "b_sd": 0.5,
        "sd": ScaleSpec(kind="half_normal", scale=1.0),
        "sigma": scale_spec(ScalePrior.brms_default()),
        "lkj_eta": 1.0,
        "target_accept": 0.8,
    }
    return VaryingSettings.model_validate(defaults | dict(settings or {}))


def varying_priors(settings: VaryingSettings | Mapping[str, Any]) -> Priors:
    """The :class:`hetfx.Priors` of a varying-slopes model's settings: ``b_sd`` for every
    population-level coefficient, ``intercept`` (``flat`` or a zero-mean normal), ``sd`` for
    the varying intercepts' and slopes' SDs, ``sigma``."""
    settings = varying_settings(settings)
    intercept = settings.intercept
    if intercept != "flat" and intercept.loc != 0.0:
        raise ValueError(f"intercept prior must be 'flat' or a zero-mean normal, got {intercept!r}")
    b = Prior.normal(settings.b_sd)
    return Priors(
        effect=b,
        control=b,
        intercept=Prior.flat() if intercept == "flat" else Prior.normal(intercept.scale),
        sigma=scale_prior(settings.sigma),
        sigma_theta=scale_prior(settings.sd),
    )


def _fit_varying(df: pd.DataFrame, settings: VaryingSettings, sampler: Sampler, **spec):
    """:func:`hetfx.fit_varying_slopes` with the paper's priors, engine and sampler."""
    from hetfx.api import fit_varying_slopes

    return fit_varying_slopes(
        df,
        priors=varying_priors(settings),
        engine=settings.engine,
        missing="raise",
        seed=sampler.seed,
        chains=sampler.chains,
        draws=sampler.draws,
        tune=sampler.tune,
        target_accept=settings.target_accept,
        lkj_eta=settings.lkj_eta,
        maxdepth=settings.max_treedepth,
        qmc_m=settings.qmc_points_log2,
        **spec,
    )


def _fit_a1(df: pd.DataFrame, settings, sampler):
    """Appendix A1: ``force ~ controls + alliance*(regime+stakes+costs+region) +
    (1 + alliance | treat_group)``; the effect of alliance per treat_group.

    ``settings.controls`` overrides the additive controls (the brms fixture omits
    ``natl_sup``). The controls enter additively, so the effect does not depend on the
    values they are held at (the spec's sample medians).
    """
    settings = varying_settings(settings)
    return _fit_varying(
        df,
        settings,
        sampler,
        outcome="force",
        treatment="alliance",
        factors=["treat_group"],
        controls=list(settings.controls or A1_CONTROLS),
        effect=" + ".join(CONDITION_FACTORS),
    )


# ---------------------------------------------------------------------- Bush-Prather fit
def fit_bush_prather(
    bp: pd.DataFrame,
    coding: str,
    settings: VaryingSettings | Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
) -> VaryingSlopesResults:
    """Appendix A2: ``ipe_support ~ 1 + college_educ + employ_dum + sum_k (1 +
    treat_germrus | factor_k)`` over w2_vote_hill, pol_engage, invest_cond, woman.

    The effect of Germany vs Russia per observed combination of the four factors is the
    sum of the four varying slopes (no population-level slope, as published); it does not
    depend on college_educ and employ_dum (held at 1 by the spec).
    """
    df = bush_prather_frame(bp, coding)
    df = df.assign(**{f: df[f].astype("int64") for f in BP_FACTORS})
    return _fit_varying(
        df,
        varying_settings(settings),
        sampler or Sampler(),
        outcome="ipe_support",
        treatment="treat_germrus",
        factors=BP_FACTORS,
        controls=["college_educ", "employ_dum"],
        effect=False,  # as published: no population-level slope
    )
