"""FlowJo biex against FlowJo's own exported lookup table (shared data)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import shared_data_or_skip

from flowtools.transforms import FlowJoBiexTransform

LUT = "tr_biex_l256_w-7.943282_n1.000000_m4.418540_r262144.000029.csv"


@pytest.mark.conformance
def test_biex_reproduces_flowjo_lut():
    path = shared_data_or_skip() / "compensation" / LUT
    if not path.is_file():
        pytest.skip(f"{LUT} not in the shared data")
    # column 1: output bin i (0..4095), column 2: the data value FlowJo maps to bin i
    channel, data = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
    xf = FlowJoBiexTransform(neg=1.0, width=-7.943282, pos=4.418540, max_value=262144.000029, length=256)
    got = xf.apply(data)
    # FlowKit's criterion: mean relative error in %, skipping row 0 (bin 0 would divide by 0)
    mean_pct = 100.0 * np.mean(np.abs(got[1:] - channel[1:]) / channel[1:])
    assert mean_pct < 0.01, mean_pct
    assert np.max(np.abs(got - channel)) < 0.01
    # and back: channels to data values
    np.testing.assert_allclose(xf.inverse(channel[1:]), data[1:], rtol=1e-4, atol=0.05)
