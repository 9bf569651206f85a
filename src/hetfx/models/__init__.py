"""Models of hetfx: the two-equation (lambda) model and varying-slopes models."""

from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import LambdaFit, fit_lambda_model

__all__ = ["LambdaFit", "ScalePrior", "fit_lambda_model"]
