"""Scale transforms: Gating-ML 2.0 (flin, flog, fasinh, logicle, hyperlog, fratio) and FlowJo.

Every transform is a frozen dataclass with ``apply(x)`` and ``inverse(y)``.
Importing this package loads no numba: the kernels compile (or load from the
on-disk cache) on the first ``apply`` of logicle, hyperlog or asinh.

Examples
--------
>>> from flowtools.transforms import LogicleTransform
>>> xf = LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0)
>>> y = xf.apply([-100.0, 0.0, 1000.0, 262144.0])
>>> x = xf.inverse(y)
"""

from __future__ import annotations

from flowtools.transforms.flowjo import FlowJoBiexTransform, FlowJoLinearTransform, FlowJoLogTransform
from flowtools.transforms.scales import (
    AsinhTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
    RatioTransform,
    estimate_logicle,
)

__all__ = [
    "AsinhTransform",
    "FlowJoBiexTransform",
    "FlowJoLinearTransform",
    "FlowJoLogTransform",
    "HyperlogTransform",
    "LinearTransform",
    "LogTransform",
    "LogicleTransform",
    "RatioTransform",
    "estimate_logicle",
]
