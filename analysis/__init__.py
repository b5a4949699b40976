"""Theory side of fastsgd: activations, Gaussian integrals, ODEs and deviation metrics.

The simulator (:mod:`fastsgd`) imports its activation functions and folding coefficients from
:mod:`analysis.activations`, so the simulation and the theory share one definition of each.
"""
