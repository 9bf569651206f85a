"""The worked examples (docs/worked-examples.qmd) run, block by block, and say what they show.

The whole document is executed once (about 25 s of CPU, most of it the Bernoulli fit's NUTS
run) by the same code as the pipeline's stage `examples` (analysis/examples.py), into a
temporary directory; the tests then check the claims its prose makes against the variables
its blocks left behind, and that the committed rendering in docs/_output comes from the
current document. The executor itself and fit_ols on a restricted design are tested apart.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "worked-examples.qmd"
COMMITTED = ROOT / "docs" / "_output" / "worked-examples.md"


def _load_examples():
    spec = importlib.util.spec_from_file_location("examples_stage", ROOT / "analysis/examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["examples_stage"] = module
    spec.loader.exec_module(module)
    return module


EX = _load_examples()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Execute the whole document once: (markdown path, executed blocks, namespace)."""
    out = tmp_path_factory.mktemp("examples")
    ns: dict = {}
    md, executed = EX.run_document(DOCUMENT, out, namespace=ns)
    return md, executed, ns


# --------------------------------------------------------------------------- the document


def test_every_block_ran_and_the_figures_exist(run):
    md, executed, _ = run
    blocks = [
        p for p in EX.parse(DOCUMENT.read_text(encoding="utf-8"))[1] if isinstance(p, EX.Block)
    ]
    assert len(executed) == len(blocks) >= 15
    text = md.read_text(encoding="utf-8")
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)\{#fig-", text)
    assert figures == ["figures/fig-tunisia.png", "figures/fig-shrinkage.png"]
    for fig in figures:
        assert (md.parent / fig).read_bytes().startswith(b"\x89PNG")
    assert "(time masked) s" in text  # summary()'s run time, masked for byte-identical reruns


def test_tunisia_claims(run):
    _, executed, ns = run
    res, res2, effects = ns["res"], ns["res2"], ns["effects"].set_index("party")
    # "hetfx drops the rows with a missing outcome and says so"
    assert res.dropped == {"trade": 42}
    assert any("dropped 42 of 1107 rows" in w for e in executed for w in e.warnings)
    # "Nidaa supporters' support for trade drops by about half a point ...; Ennahda's does not"
    assert -0.65 < effects.loc["Nidaa", "estimate"] < -0.4
    assert effects.loc["Nidaa", "upper"] < 0
    assert effects.loc["Ennahda", "lower"] < 0 < effects.loc["Ennahda", "upper"]
    # the contrast: p_greater "essentially zero"
    c = ns["nidaa_vs_ennahda"]
    assert c["estimate"] < 0 and c["upper"] < 0 and c["p_greater"] < 0.01
    # the second modifier: rows counted by variable; those naming Qatar react more negatively
    assert res2.dropped == {"trade": 42, "qatar_influence": 612}
    q = res2.contrast({"qatar_influence": "yes"}, {"qatar_influence": "no"}, level=0.9)
    assert -0.95 < q["estimate"] < -0.6 and q["upper"] < 0  # "about three quarters of a point"
    assert sorted(res2.group_effects().query("qatar_influence == 'yes'")["n_obs"]) == [24, 29, 37]


def test_tunisia_binary_claims(run):
    _, _, ns = run
    logit = ns["logit"]
    assert logit.family == "bernoulli"
    g = logit.group_effects(level=0.9).set_index("party")
    # "lowers the share of Nidaa supporters who agree by about 18 points"
    assert -0.22 < g.loc["Nidaa", "estimate"] < -0.14 and g.loc["Nidaa", "upper"] < 0
    # "and leaves Ennahda supporters' share unchanged"
    assert g.loc["Ennahda", "lower"] < 0 < g.loc["Ennahda", "upper"]
    c = logit.contrast("Nidaa", "Ennahda")
    assert c["upper"] < 0 and c["p_greater"] < 0.01


def test_conjoint_recovery_claims(run):
    _, _, ns = run
    truth, fit = ns["truth"], ns["fit"]
    # "That leaves 30 of the 36 combinations as cells"
    assert len(truth) == 30 == len(fit.group_effects())
    rec = ns["recovery"].set_index("model")
    # "The hierarchical intervals cover all 30 true effects and are narrower than OLS's"
    assert rec.loc["hierarchical", "coverage_90"] == pytest.approx(30 / 30)
    assert rec.loc["hierarchical", "mean_width"] < rec.loc["OLS", "mean_width"]
    # "its estimates are about half as far from the truth (RMSE)"
    assert 0.4 < rec.loc["hierarchical", "rmse"] / rec.loc["OLS", "rmse"] < 0.65
    # the truth is a linear function plus deviations of SD 0.15: sigma_theta is recovered
    st = fit.coefs().set_index("term").loc["sigma_theta"]
    assert st["q025"] < 0.15 < st["q975"]


def test_conjoint_predict_ame_and_loo_claims(run):
    _, _, ns = run
    pred = ns["pred"]
    # the 35-year-old with federal experience is unseen, the 65-year-old is a fitted cell
    assert pred["seen"].tolist() == [False, True]
    width = pred["upper"] - pred["lower"]
    assert width[0] > width[1]  # "its interval is wider than a fitted cell's"
    assert pred.loc[0, "lower"] < pred.loc[0, "expected_truth"] < pred.loc[0, "upper"]
    # AMEs by party: every true average inside its 90% interval, parties in the right order
    ames = ns["ames"].set_index("party")
    assert ((ames["lower"] < ames["true"]) & (ames["true"] < ames["upper"])).all()
    assert ames.loc["Democrat", "estimate"] > ames.loc["Independent", "estimate"]
    assert ames.loc["Independent", "estimate"] > ames.loc["Republican", "estimate"]
    # "prefers the additive equation ... but only by about one standard error"
    comp = ns["comparison"]
    assert comp.index[0] == "additive"
    ratio = comp.loc["common mean", "elpd_diff"] / comp.loc["common mean", "dse"]
    assert 0.5 < ratio < 2
    assert comp.loc["common mean", "p_loo"] > comp.loc["additive", "p_loo"]


def _skeleton(markdown: str) -> str:
    """The markdown without what execution adds (outputs, figures): prose and code only."""
    text = re.sub(r"``` \{\.output\}\n.*?\n```\n", "", markdown, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\(figures/[^)]+\)(\{#[^}]+\})?\n", "", text)
    return re.sub(r"\n{2,}", "\n\n", text)


def test_committed_rendering_is_of_the_current_document(run):
    """docs/_output/worked-examples.md has the document's current prose and code (its numbers
    may differ in the last digits on another CPU, so they are not compared): rerun
    `python analysis/examples.py` after editing docs/worked-examples.qmd."""
    md, _, _ = run
    assert COMMITTED.exists(), "run python analysis/examples.py"
    assert _skeleton(COMMITTED.read_text(encoding="utf-8")) == _skeleton(
        md.read_text(encoding="utf-8")
    )
    for stem in ("worked-examples.html", "worked-examples.pdf"):
        assert (COMMITTED.parent / stem).stat().st_size > 10_000


# --------------------------------------------------------------------------- the executor

TINY = """---
title: Tiny
format:
  html:
    embed-resources: true
jupyter: python3
---

Prose with `code`.

```{python}
import warnings
x = 2
print("printed", x)
warnings.warn("from the block")
x * 21
```

```{python}
#| label: fig-tiny
#| fig-cap: "A caption."
#| fig-width: 3
#| fig-height: 2
import pandas as pd
from plotnine import aes, geom_point, ggplot
ggplot(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), aes("a", "b")) + geom_point()
```

```{python}
#| echo: false
print("Diagnostics: max R-hat 1.000 (x), min bulk ESS 400, divergences 0, 12.3 s")
```
"""


def test_executor_output_figures_masks_and_determinism(tmp_path):
    doc = tmp_path / "tiny.qmd"
    doc.write_text(TINY, encoding="utf-8")
    md, executed = EX.run_document(doc, tmp_path / "a")
    text = md.read_text(encoding="utf-8")
    assert text.startswith("---\ntitle: Tiny\nformat:")  # the execution keys are gone
    assert "jupyter" not in text
    assert "``` {.output}\nUserWarning: from the block\nprinted 2\n42\n```" in text
    assert "![A caption.](figures/fig-tiny.png){#fig-tiny}" in text
    assert "#| label" not in text
    assert 'print("Diagnostics' not in text  # echo: false
    assert "divergences 0, (time masked) s" in text and "12.3" not in text
    assert executed[0].warnings == ["UserWarning: from the block"]
    md2, _ = EX.run_document(doc, tmp_path / "b")
    assert md2.read_bytes() == md.read_bytes()
    png = "figures/fig-tiny.png"
    assert (md.parent / png).read_bytes() == (md2.parent / png).read_bytes()


def test_executor_names_the_failing_block(tmp_path):
    doc = tmp_path / "bad.qmd"
    doc.write_text("Text\n\n```{python}\nx = 1\n```\n\n```{python}\n1 / 0\n```\n")
    with pytest.raises(EX.ExampleError, match=r"block 2, line 8>.*ZeroDivisionError"):
        EX.run_document(doc, tmp_path / "out")


@pytest.mark.parametrize("use_quarto", [False, True], ids=["fallback", "quarto"])
def test_render_writes_checked_html_and_pdf(tmp_path, use_quarto):
    if use_quarto and shutil.which("quarto") is None:
        pytest.skip("Quarto is not installed (.ci/run puts it on PATH where it can)")
    doc = tmp_path / "tiny.qmd"
    doc.write_text(TINY, encoding="utf-8")
    md, _ = EX.run_document(doc, tmp_path / "out")
    html, pdf = EX.render_markdown(md, use_quarto=use_quarto)
    page = html.read_text(encoding="utf-8")
    assert re.search(r"Figure(&nbsp;| |\u00a0)1: A caption\.", page)
    assert "data:image/png;base64" in page  # self-contained
    assert pdf.read_bytes().startswith(b"%PDF")


# --------------------------------------------------------------------------- fit_ols


def _restricted(seed: int, full: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 900
    df = pd.DataFrame(
        {
            "a": rng.choice(["x", "y", "z"], n),
            "b": rng.choice(["u", "v"], n),
            "t": rng.integers(0, 2, n),
        }
    )
    if not full:  # the design never shows (z, v)
        df.loc[(df.a == "z") & (df.b == "v"), "b"] = "u"
    df["y"] = rng.normal(0, 1, n) + df.t * (df.a == "y") + 0.5 * (df.b == "v")
    return df


@pytest.mark.parametrize("full", [True, False])
def test_fit_ols_is_the_difference_in_means_per_cell_also_in_restricted_designs(full):
    """Without controls the saturated OLS effect of a cell is its treated-minus-control mean,
    whether every combination of the modifiers occurs or not (a restricted conjoint: the
    factorial formula is then rank-deficient and the cells enter as one factor)."""
    import hetfx

    df = _restricted(3, full)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no aliasing warnings either way
        ols = hetfx.fit_ols(df, "y", "t", ["a", "b"])
    g = ols.group_effects(level=0.9)
    assert len(g) == (6 if full else 5)
    means = df.groupby(["a", "b", "t"])["y"].mean().unstack("t")
    want = (means[1] - means[0]).rename("want").reset_index()
    m = g.merge(want, on=["a", "b"], validate="one_to_one")
    np.testing.assert_allclose(m["estimate"], m["want"], atol=1e-10)
    assert (m["lower"] < m["estimate"]).all() and (m["estimate"] < m["upper"]).all()
    assert ols.design.effect_formula == "a * b"
