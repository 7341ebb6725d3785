"""What dropout says about uncertainty: Monte-Carlo prediction, metrics, ensembles.

- :mod:`droplab.uncertainty.mc`: :func:`mc_predict`, T stochastic passes in
  one call, replayable stream by stream (Gal & Ghahramani 2016).
- :mod:`droplab.uncertainty.metrics`: Gaussian log-likelihood, RMSE, NLL,
  expected calibration error, Brier score.
- :mod:`droplab.uncertainty.ensemble`: the exact average over all 2^n
  subnetworks, weight scaling, MC-k and the normalised weighted geometric mean.
- :mod:`droplab.uncertainty.uci`: the UCI regression protocol of the paper.
"""

from droplab.uncertainty.mc import MCPrediction as MCPrediction
from droplab.uncertainty.mc import mc_predict as mc_predict

__all__ = ["MCPrediction", "mc_predict"]
