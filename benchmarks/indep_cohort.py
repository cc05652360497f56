"""A second, independent cohort generator for the statistics' validity benchmark.

It shares nothing with :mod:`flowtools.synth` (no import, no constant, no model):
the compositions, counts, plates and outcomes are drawn here from first
principles, so a test that happens to match ``synth``'s own variance model
cannot pass on this one by construction.

Model
-----
One tube (``PBMC``), a four-level tree of immune populations:

* ``Lymphocytes`` -> {``T cells``, ``B cells``, ``NK cells``, ``Other``}: a partition;
* ``T cells`` -> {``CD4``, ``CD8``, ``DN``}: a partition;
* ``NK cells`` -> {``CD56bright``, ``CD56dim``}: a two-part partition;
* ``CD4`` -> ``Treg``, ``Th17`` and ``Rare`` (about 0.05 %: counts 0-20): subsets, not a partition.

Each woman's lymphocyte count is log-uniform over a 25-fold range (2k-50k by
default). Two composition models (``model``):

``logit-normal``
    a woman's expected shares are the softmax (partitions) or the expit
    (subsets) of population baseline logits + a plate effect + a woman effect
    ``N(0, sd_pop^2)``, with ``sd_pop`` differing by population; counts are then
    multinomial / binomial given those shares.
``dirichlet``
    Dirichlet-multinomial partitions (concentration differing by parent) and
    beta-binomial subsets (intra-class correlation differing by population), the
    plate effect shifting the Dirichlet mean on the log scale.

Plates of ``plate_size`` women get plate effects ``N(0, plate_sd^2)`` per
population (logit scale). ``confounded=True`` assigns RM women preferentially
to the first half of the plates (``confounding`` is the RM share there), so
plate and group are correlated but both estimable. Age and BMI are drawn
independently of group and have a small effect on the CD8 share (a real
covariate that carries no group signal).

Signal (off by default): ``nk_shift`` percentage points added to the NK share
of lymphocytes in a fraction ``nk_fraction`` of RM women (taken from ``Other``
and ``B cells`` in proportion). ``loss_log_or`` (per SD of logit NK share) puts
the NK share into the next-pregnancy-loss outcome of RM women.

The output frames match :func:`flowtools.stats.tables_from_truth` (counts) and
:func:`flowtools.stats.read_clinical` (clinical), so ``compare`` and
``evaluate_models`` take them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["IndepCohortSpec", "make_indep_cohort", "true_next_loss_logit"]

TUBE = "PBMC"
_L = "Lymphocytes"
_T = f"{_L}/T cells"
_NK = f"{_L}/NK cells"
_CD4 = f"{_T}/CD4"

# (population, parent, baseline share of parent, between-woman logit SD)
_LYMPH_PARTS = (
    (f"{_L}/T cells", _L, 0.68, 0.25),
    (f"{_L}/B cells", _L, 0.11, 0.35),
    (_NK, _L, 0.13, 0.40),
    (f"{_L}/Other", _L, 0.08, 0.30),
)
_T_PARTS = (
    (f"{_T}/CD4", _T, 0.62, 0.20),
    (f"{_T}/CD8", _T, 0.33, 0.30),
    (f"{_T}/DN", _T, 0.05, 0.45),
)
_NK_PARTS = (
    (f"{_NK}/CD56bright", _NK, 0.08, 0.50),
    (f"{_NK}/CD56dim", _NK, 0.92, 0.10),
)
_CD4_SUBSETS = (
    (f"{_CD4}/Treg", _CD4, 0.06, 0.25),
    (f"{_CD4}/Th17", _CD4, 0.012, 0.45),
    (f"{_CD4}/Rare", _CD4, 0.0005, 0.60),
)
# Dirichlet concentration of each partition (smaller = more between-woman spread)
_CONCENTRATION = {_L: 60.0, _T: 90.0, _NK: 40.0}
# beta-binomial intra-class correlation of each subset
_ICC = {f"{_CD4}/Treg": 0.004, f"{_CD4}/Th17": 0.01, f"{_CD4}/Rare": 0.002}


@dataclass(frozen=True)
class IndepCohortSpec:
    """Parameters of one independent cohort (see the module docstring)."""

    n_rm: int = 60
    n_control: int = 60
    model: str = "logit-normal"
    count_range: tuple[float, float] = (2_000.0, 50_000.0)
    plate_size: int = 12
    plate_sd: float = 0.15
    confounded: bool = False
    confounding: float = 0.75
    spread: float = 1.0
    nk_shift: float = 0.0
    nk_fraction: float = 0.4
    loss_log_or: float = 0.0
    loss_rate: float = 0.35


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _multinomial(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0, None)
    p = p / p.sum(axis=1, keepdims=True)
    return np.vstack([rng.multinomial(int(ni), pi) for ni, pi in zip(n, p, strict=True)])


def make_indep_cohort(spec: IndepCohortSpec, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Draw one cohort.

    Parameters
    ----------
    spec : IndepCohortSpec
    seed : int

    Returns
    -------
    counts : pandas.DataFrame
        The count table (woman_id, tube, population, feature, parent, count, parent_count, pct_parent).
    clinical : pandas.DataFrame
        woman_id, group, age, bmi, n_prior_losses, rm_type, plate, next_pregnancy_loss (RM women).
    truth : dict
        ``nk_share`` (each woman's expected NK share of lymphocytes), ``affected`` (bool per woman),
        ``loss_logit`` (true log-odds of the next loss for RM women, NaN for controls).
    """
    if spec.model not in ("logit-normal", "dirichlet"):
        msg = f"model must be 'logit-normal' or 'dirichlet', not {spec.model!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    n = spec.n_rm + spec.n_control
    group = np.array(["RM"] * spec.n_rm + ["control"] * spec.n_control)
    rng.shuffle(group)
    rm = group == "RM"
    n_plates = max(2, int(np.ceil(n / spec.plate_size)))
    if spec.confounded:
        first = np.arange(n_plates) < n_plates // 2
        # RM women go to the first half of the plates with probability `confounding`
        pick = np.where(rm, rng.random(n) < spec.confounding, rng.random(n) >= spec.confounding)
        plate = np.where(
            pick,
            rng.choice(np.flatnonzero(first), n),
            rng.choice(np.flatnonzero(~first), n),
        )
    else:
        plate = rng.permutation(np.arange(n) % n_plates)
    age = np.clip(rng.normal(33, 5, n), 18, 50).round(1)
    bmi = np.clip(rng.lognormal(np.log(24), 0.15, n), 16, 45).round(1)
    lo, hi = np.log(spec.count_range[0]), np.log(spec.count_range[1])
    lymph = np.round(np.exp(rng.uniform(lo, hi, n))).astype(np.int64)
    age_z = (age - 33) / 5

    def plate_effects(k: int) -> np.ndarray:
        return rng.normal(0, spec.plate_sd, (n_plates, k))[plate]

    def partition_means(parts: tuple, extra: np.ndarray | None = None) -> np.ndarray:
        base = np.log(np.array([p[2] for p in parts]))
        sd = np.array([p[3] for p in parts]) * spec.spread
        z = base + plate_effects(len(parts))
        if spec.model == "logit-normal":
            z = z + rng.normal(0, 1, (n, len(parts))) * sd
        if extra is not None:
            z = z + extra
        return _softmax(z)

    def draw_partition(parent_n: np.ndarray, mean: np.ndarray, parent: str) -> np.ndarray:
        if spec.model == "dirichlet":
            a = _CONCENTRATION[parent] / spec.spread**2 * mean
            shares = np.vstack([rng.dirichlet(np.maximum(ai, 1e-3)) for ai in a])
        else:
            shares = mean
        return _multinomial(rng, parent_n, shares)

    # lymphocytes -> T, B, NK, Other
    m_l = partition_means(_LYMPH_PARTS)
    affected = rm & (rng.random(n) < spec.nk_fraction) if spec.nk_shift else np.zeros(n, bool)
    if spec.nk_shift:
        add = spec.nk_shift / 100.0
        take = m_l[:, [1, 3]]
        frac = take / take.sum(axis=1, keepdims=True)
        m_l[affected, 2] += add
        m_l[np.ix_(affected, [1, 3])] -= add * frac[affected]
        m_l = np.clip(m_l, 1e-6, None)
    c_l = draw_partition(lymph, m_l, _L)
    # T -> CD4, CD8, DN (age moves CD8 a little: a covariate without group signal)
    cd8_age = np.zeros((n, 3))
    cd8_age[:, 1] = 0.05 * age_z
    c_t = draw_partition(c_l[:, 0], partition_means(_T_PARTS, cd8_age), _T)
    c_nk = draw_partition(c_l[:, 2], partition_means(_NK_PARTS), _NK)
    # CD4 -> Treg, Th17, Rare (subsets)
    cd4 = c_t[:, 0]
    subs = []
    for name, _, share, sd in _CD4_SUBSETS:
        z = np.log(share / (1 - share)) + plate_effects(1)[:, 0]
        if spec.model == "logit-normal":
            p = _expit(z + rng.normal(0, sd * spec.spread, n))
            subs.append(rng.binomial(cd4, p))
        else:
            mu = _expit(z)
            rho = min(_ICC[name] * spec.spread**2, 0.5)
            ab = (1 - rho) / rho
            p = rng.beta(mu * ab, (1 - mu) * ab)
            subs.append(rng.binomial(cd4, p))
    wid = np.array([f"W{i:04d}" for i in range(n)])
    rows = []

    def add(parts: tuple, counts: np.ndarray, parent_n: np.ndarray) -> None:
        for j, (name, parent, *_r) in enumerate(parts):
            rows.append(pd.DataFrame({
                "woman_id": wid, "population": name, "parent": parent,
                "count": counts[:, j], "parent_count": parent_n,
            }))

    rows.append(pd.DataFrame({"woman_id": wid, "population": _L, "parent": "", "count": lymph,
                              "parent_count": lymph}))
    add(_LYMPH_PARTS, c_l, lymph)
    add(_T_PARTS, c_t, c_l[:, 0])
    add(_NK_PARTS, c_nk, c_l[:, 2])
    add(_CD4_SUBSETS, np.column_stack(subs), cd4)
    counts = pd.concat(rows, ignore_index=True)
    counts = counts[counts["population"] != _L]  # the root is not a population with a parent
    counts.insert(1, "tube", TUBE)
    counts.insert(3, "feature", TUBE + "|" + counts["population"])
    counts["count"] = counts["count"].astype("int64")
    counts["parent_count"] = counts["parent_count"].astype("int64")
    with np.errstate(divide="ignore", invalid="ignore"):
        counts["pct_parent"] = np.where(
            counts["parent_count"] > 0, 100.0 * counts["count"] / counts["parent_count"], np.nan
        )
    counts = counts.sort_values(["feature", "woman_id"]).reset_index(drop=True)

    nk_share = m_l[:, 2]
    lz = np.log(nk_share / (1 - nk_share))
    lz = (lz - lz.mean()) / (lz.std() or 1.0)
    base = np.log(spec.loss_rate / (1 - spec.loss_rate))
    losses = np.where(rm, rng.choice([2, 3, 4, 5], n, p=[0.5, 0.28, 0.15, 0.07]), rng.choice([0, 1], n))
    loss_logit = base + 0.25 * (losses - 2.8) + 0.04 * (age - 33) + spec.loss_log_or * lz
    outcome = (rng.random(n) < _expit(loss_logit)).astype(float)
    clinical = pd.DataFrame({
        "woman_id": wid,
        "group": group,
        "age": age,
        "bmi": bmi,
        "n_prior_losses": losses.astype(float),
        "rm_type": np.where(rm, np.where(rng.random(n) < 0.6, "primary", "secondary"), None),
        "plate": np.array([f"P{p + 1:02d}" for p in plate]),
        "next_pregnancy_loss": np.where(rm, outcome, np.nan),
    })
    truth = {
        "nk_share": nk_share,
        "affected": affected,
        "loss_logit": np.where(rm, loss_logit, np.nan),
    }
    return counts, clinical, truth


def true_next_loss_logit(clinical: pd.DataFrame, truth: dict) -> np.ndarray:
    """The true log-odds of the next loss of each RM woman of ``clinical`` (in its row order)."""
    keep = (clinical["group"] == "RM").to_numpy()
    return np.asarray(truth["loss_logit"])[keep]
