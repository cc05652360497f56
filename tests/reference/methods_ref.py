"""References for the data-driven gating methods.

- Second algorithms for the same job (scipy): ``mindensity_ref``, ``chi2_ppf_ref``, ``mixture_valley``.
- Plain numpy for every numba kernel of ``flowtools.gating.methods`` (one reference per kernel,
  named after it with ``_ref``) and for the methods' sorted-order fast paths. The kernels and
  fast paths promise numpy's IEEE operations in numpy's order, so the tests compare them with
  these bit for bit, except where a docstring below says otherwise.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_MAD_SD = 1.482602218505602
_LOG_TINY = math.log(float(np.finfo(np.float64).tiny))
EPS10 = 10 * np.finfo(np.float64).eps

# ------------------------------------------------------------------------------------------ second algorithms


def mindensity_ref(x: np.ndarray, *, min_peak_height: float = 0.05) -> float:
    """Valley between the two most prominent peaks of scipy's gaussian_kde (Scott's rule)."""
    from scipy.signal import find_peaks
    from scipy.stats import gaussian_kde

    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    grid = np.linspace(x.min(), x.max(), 2001)
    dens = gaussian_kde(x[:: max(1, x.size // 20000)])(grid)
    idx, props = find_peaks(np.r_[0.0, dens, 0.0], prominence=min_peak_height * dens.max())
    idx -= 1
    if idx.size < 2:
        msg = "one peak"
        raise ValueError(msg)
    top = np.sort(idx[np.argsort(-props["prominences"])[:2]])
    return float(grid[top[0] + np.argmin(dens[top[0] : top[1] + 1])])


def chi2_ppf_ref(p: float, d: int) -> float:
    """Chi-square quantile from scipy."""
    from scipy.stats import chi2

    return float(chi2.ppf(p, d))


def mixture_valley(weights, means, sds, lo: float, hi: float) -> float:
    """The lowest point of a 1-D normal mixture density between lo and hi (the true cut)."""
    grid = np.linspace(lo, hi, 200_001)
    pdf = sum(
        w / s * np.exp(-0.5 * ((grid - m) / s) ** 2) for w, m, s in zip(weights, means, sds, strict=True)
    )
    return float(grid[np.argmin(pdf)])


# ------------------------------------------------------------------------------------------ density kernels


def restrict_ref(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``_density_kernels.restrict``."""
    return x[(x >= lo) & (x <= hi)]


def density_hist_ref(x: np.ndarray, lo: float, dx: float, grid: int) -> np.ndarray:
    """``_density_kernels.density_hist``: events per nearest grid index, off-grid events dropped."""
    idx = np.floor((x - lo) / dx + 0.5)
    idx = idx[(idx >= 0) & (idx < grid)].astype(np.intp)
    return np.bincount(idx, minlength=grid).astype(np.float64)


def prominences_ref(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``_density_kernels.prominences``: each peak's height minus the higher of its two bases."""
    prom = np.empty(idx.size)
    for j, i in enumerate(idx):
        higher_l = np.flatnonzero(d[:i] > d[i])
        left = d[higher_l[-1] if higher_l.size else 0 : i + 1].min()
        higher_r = np.flatnonzero(d[i + 1 :] > d[i])
        right = d[i : i + 1 + (higher_r[0] + 1 if higher_r.size else len(d))].min()
        prom[j] = d[i] - max(left, right)
    return prom


def peaks_ref(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_Density.peaks``: local maxima (ends included when higher than their neighbour), prominences."""
    inner = np.flatnonzero((d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:])) + 1
    cand = list(inner)
    if d[0] > d[1]:
        cand.insert(0, 0)
    if d[-1] > d[-2]:
        cand.append(len(d) - 1)
    idx = np.array(cand, dtype=np.intp)
    return idx, prominences_ref(d, idx)


def density_ref(x: np.ndarray, factor: float, grid: int = 1024) -> tuple[np.ndarray, np.ndarray, float]:
    """``_Density(x, factor)``'s grid, density and bandwidth from np.quantile, min / max and np.convolve.

    None when ``_Density`` refuses the values (fewer than 2, or all equal).
    """
    n = x.size
    if n < 2 or not float(x.max()) > float(x.min()):
        return None
    q = np.quantile(x, [0.001, 0.25, 0.75, 0.999])
    lo_x, hi_x = float(x.min()), float(x.max())
    sd = float(np.std(x))
    spread = min(sd, float(q[2] - q[1]) / 1.34) or sd
    core = float(q[3] - q[0]) or (hi_x - lo_x)
    bw = factor * max(0.9 * spread * n**-0.2, 2e-3 * core)
    lo = max(lo_x, float(q[0]) - 0.5 * core) - 3.0 * bw
    hi = min(hi_x, float(q[3]) + 0.5 * core) + 3.0 * bw
    dx = (hi - lo) / (grid - 1)
    hist = density_hist_ref(x, lo, dx, grid)
    s = bw / dx
    half = int(min(grid - 1, math.ceil(4.0 * s)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2) if s > 0 else np.ones(1)
    dens = np.convolve(hist, k / (k.sum() * n * dx), mode="full")[half : half + grid]
    return lo + dx * np.arange(grid), dens, bw


# ------------------------------------------------------------------------------------------ qc


def interp_ref(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``_qc_kernels.interp``: numpy's own."""
    return np.interp(x, xp, fp)


def ranks_ref(v: np.ndarray) -> np.ndarray:
    """``qc._ranks``: np.interp of the values in 1001 np.quantile of a regular-stride sample."""
    q = np.quantile(np.sort(v[:: max(1, v.size // 200_000)]), np.linspace(0.0, 1.0, 1001))
    xp, inv = np.unique(q, return_inverse=True)
    fp = np.bincount(inv, weights=np.linspace(0.0, 1.0, 1001)) / np.bincount(inv)
    if xp.size == 1:
        return np.full(v.size, 0.5)
    return np.interp(v, xp, fp)


# ------------------------------------------------------------------------------------------ singlet


def singlet_band_ref(a, h, c: float, b: float, s0: float, s1: float, floor: float):
    """``_singlet_kernels.singlet_step``: the 3-sigma band of ``h = c + b a`` and its weighted system.

    Returns ``(new, design, rhs)``: the band (bool, n) and the system's rows in event order.
    """
    e = h - (c + b * a)
    s = np.maximum(s0 + s1 * a, floor)
    new = np.abs(e) <= 3.0 * s
    sw = np.sqrt(1.0 / s[new])
    return new, np.column_stack([sw, a[new] * sw]), h[new] * sw


def singlet_kept_ref(a_s, h_s, c_band: float, b_band: float, s0: float, s1: float, floor: float,
                     c: float, b: float):
    """``_singlet_kernels.singlet_kept_sorted``: the band's events in the given (area) order.

    Returns their areas and their residuals ``h - (c + b a)`` from the refitted line.
    """
    new = singlet_band_ref(a_s, h_s, c_band, b_band, s0, s1, floor)[0]
    return a_s[new], h_s[new] - (c + b * a_s[new])


def line_lstsq_ref(design: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``_singlet_kernels.line_lstsq``: the exact least-squares solution (rationals, normal equations).

    The kernel rounds; the tests compare it with this within the accuracy of the SVD.
    """
    d = [[Fraction(float(v)) for v in col] for col in design.T]
    y = [Fraction(float(v)) for v in rhs]
    a11 = sum(u * u for u in d[0])
    a12 = sum(u * w for u, w in zip(d[0], d[1], strict=True))
    a22 = sum(u * u for u in d[1])
    b1 = sum(u * w for u, w in zip(d[0], y, strict=True))
    b2 = sum(u * w for u, w in zip(d[1], y, strict=True))
    det = a11 * a22 - a12 * a12
    return np.array([float((b1 * a22 - a12 * b2) / det), float((a11 * b2 - a12 * b1) / det)])


def scale_model_ref(a: np.ndarray, e: np.ndarray, floor: float) -> tuple[float, float]:
    """``singlet._scale_model``: MADs in 16 np.quantile bins of the area, selected per event, line fit."""
    order = np.argsort(a, kind="stable")
    a_s, e_s = a[order], e[order]
    edges = np.quantile(a_s, np.linspace(0.0, 1.0, 17))
    which = np.clip(np.searchsorted(edges, a_s, side="right") - 1, 0, 15)
    bounds = np.searchsorted(which, np.arange(17), side="left")
    mids, scales = [], []
    for b in range(16):
        lo, hi = bounds[b], bounds[b + 1]
        if hi - lo >= 10:
            eb = e_s[lo:hi]
            mids.append(float(np.median(a_s[lo:hi])))
            scales.append(_MAD_SD * float(np.median(np.abs(eb - np.median(eb)))))
    if len(mids) < 2 or np.ptp(mids) == 0:
        return max(_MAD_SD * float(np.median(np.abs(e - np.median(e)))), floor), 0.0
    c1, c0 = np.polyfit(np.asarray(mids), np.asarray(scales), 1)
    return float(c0), float(c1)


def subsample_ref(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """``_common._subsample``: the seeded draw of ``limit`` rows, in their original order."""
    if x.shape[0] <= limit:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(x.shape[0], size=limit, replace=False))]


# ------------------------------------------------------------------------------------------ mixture kernels


def standardize_ref(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``_mixture_kernels.standardize``."""
    return (x - center) / scale


def distinct_rows_ref(z: np.ndarray, k: int) -> bool:
    """``_mixture_kernels.distinct_rows_at_least``: k - 1 times, drop the rows equal to the first left.

    True when rows are left (a row with a NaN equals no row, itself included).
    """
    rest = z
    for _ in range(k - 1):
        if rest.shape[0] == 0:
            return False
        rest = rest[(rest != rest[0]).any(axis=1)]
    return rest.shape[0] > 0


def m_step_ref(x, resp, reg):
    """``_mixture_kernels._m_step`` (scikit-learn's formulas): nk + 10 eps, means, covariances."""
    nk = resp.sum(axis=0) + EPS10
    means = resp.T @ x / nk[:, None]
    d = x.shape[1]
    covs = np.empty((resp.shape[1], d, d))
    for j in range(resp.shape[1]):
        diff = x - means[j]
        covs[j] = (resp[:, j] * diff.T) @ diff / nk[j]
        covs[j].flat[:: d + 1] += reg
    return nk, means, covs


def log_prob_ref(x, w, means, prec, log_det):
    """``_mixture_kernels._log_prob``: the per-event loop, in the kernel's order of operations.

    Returns ``(lp, top)``: log(w_k N(x_i)) - top_i, (k, n), with top_i the maximum over k
    (0 if not finite) and the terms whose exp() would be subnormal at -inf.
    """
    n, d = x.shape
    k = means.shape[0]
    out = np.empty((k, n))
    for j in range(k):
        const = -0.5 * (d * math.log(2.0 * math.pi)) + log_det[j] + math.log(w[j])
        for i in range(n):
            q = 0.0
            for c in range(d):
                s = 0.0
                for a in range(c + 1):
                    s += (x[i, a] - means[j, a]) * prec[j, a, c]
                q += s * s
            out[j, i] = const - 0.5 * q
    top = out.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    out = out - top
    out[out < _LOG_TINY] = -np.inf
    return out, top


def gmm_em_ref(x, labels, k, reg=1e-4, tol=1e-3, max_iter=300):
    """``_mixture_kernels.gmm_em``: plain-numpy EM from hard labels (scikit-learn's formulas)."""
    n, d = x.shape
    resp = np.zeros((n, k))
    resp[np.arange(n), labels] = 1.0
    nk, means, covs = m_step_ref(x, resp, reg)
    w = nk / n
    lower = -np.inf
    for it in range(1, max_iter + 1):
        prev = lower
        prec = [np.linalg.inv(np.linalg.cholesky(c)).T for c in covs]
        logp = np.stack(
            [-0.5 * (d * math.log(2 * math.pi) + (((x - means[j]) @ prec[j]) ** 2).sum(axis=1))
             + np.log(np.diag(prec[j])).sum() for j in range(k)], axis=1) + np.log(w)
        top = logp.max(axis=1)
        norm = top + np.log(np.exp(logp - top[:, None]).sum(axis=1))
        lower = norm.mean()
        nk, means, covs = m_step_ref(x, np.exp(logp - norm[:, None]), reg)
        w = nk / nk.sum()
        if abs(lower - prev) < tol:
            return 1, it, w, means, covs
    return 0, max_iter, w, means, covs


# ------------------------------------------------------------------------------------------ k-means kernels


def lloyd_assign_ref(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``_kmeans_kernels._lloyd_step``'s labels: nearest centre by ||c||^2 - 2 x.c (ties: lowest index)."""
    return np.argmin((centers**2).sum(axis=1)[None, :] - 2.0 * (x @ centers.T), axis=1)


def kmeans_lloyd_ref(x, centers, tol, max_iter=300):
    """``_kmeans_kernels.kmeans_lloyd``: scikit-learn's ``_kmeans_single_lloyd``, unit weights."""
    k = centers.shape[0]
    labels = np.full(x.shape[0], -1)
    old = labels.copy()
    strict = False
    it = 0
    while it < max_iter:
        it += 1
        labels = lloyd_assign_ref(x, centers)
        counts = np.bincount(labels, minlength=k).astype(float)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = ((x - centers[labels]) ** 2).sum(axis=1)
            order = np.argsort(-far, kind="stable")
            for e, j in enumerate(empty):
                i = order[e]
                sums[labels[i]] -= x[i]
                sums[j] = x[i]
                counts[labels[i]] -= 1
                counts[j] = 1
        new = sums / counts[:, None]
        shift = np.sqrt(((new - centers) ** 2).sum(axis=1))
        centers = new
        if np.array_equal(labels, old):
            strict = True
            break
        if (shift**2).sum() <= tol:
            break
        old = labels
    if not strict:
        labels = lloyd_assign_ref(x, centers)
    return labels, centers, it


def center_columns_ref(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_kmeans_kernels.center_columns``: centred events, np.var by column, einsum row norms (d = 2)."""
    xc = z - z.mean(axis=0)
    return xc, np.var(z, axis=0), np.einsum("ij,ij->i", xc, xc)


def kpp_sq_dist_ref(dot, c_norms, sq_norms, closest, use_closest: int) -> np.ndarray:
    """``_kmeans_kernels.kpp_sq_dist`` (scikit-learn's ``_euclidean_distances``, then the running min)."""
    d = -2 * dot
    d += c_norms[:, None]
    d += sq_norms[None, :]
    np.maximum(d, 0, out=d)
    if use_closest:
        np.minimum(closest, d, out=d)
    return d


def gmm_gate_ref(x: np.ndarray, seed: int, *, k: int, target, max_events: int):
    """The ``gmm`` gate with scikit-learn's ``GaussianMixture`` as the fit: the target's mean and covariance.

    The same subsample, robust standardisation and choice of component as the method.
    """
    from sklearn.mixture import GaussianMixture

    x = subsample_ref(np.asarray(x, dtype=np.float64), max_events, seed)
    center = np.median(x, axis=0)
    scale = np.array([_MAD_SD * float(np.median(np.abs(x[:, j] - center[j]))) or float(np.std(x[:, j]))
                      for j in range(x.shape[1])])
    z = (x - center) / scale
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300, random_state=seed).fit(z)
    means = gm.means_ * scale + center
    if isinstance(target, tuple):
        pick = int(np.argmin(((means - np.asarray(target)) ** 2).sum(axis=1)))
    elif target == "largest":
        pick = int(np.argmax(gm.weights_))
    else:
        col = means[:, "xyz".index(target[-1])]
        pick = int(np.argmax(col) if target.startswith("highest") else np.argmin(col))
    return means[pick], gm.covariances_[pick] * np.outer(scale, scale)
