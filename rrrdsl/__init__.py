"""rrrdsl: compose diffusion models as energy-based models and sample them with annealed MCMC."""
from .errors import RrrdslError

__all__ = ["RrrdslError"]
