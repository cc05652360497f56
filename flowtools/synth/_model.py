"""The biology and the instrument of the synthetic cohort, as plain tables.

Everything the generator draws around lives here: the population tree with its
between-woman centres and spreads (``shared/design/cohort.md``), the
marker expression profile of every population, the two staining panels, the
spillover of the instrument and the planted effects. The functions are pure:
random state always comes in as a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DETECTORS",
    "DOUBLET_CODE",
    "EFFECTS",
    "LEAVES",
    "MARKERS",
    "NODES",
    "PANELS",
    "SINGLET_CODES",
    "TUBES",
    "Effect",
    "apply_effects",
    "draw_shares",
    "expressed",
    "leaf_probabilities",
    "node_counts",
    "parent_index",
    "profile_tables",
    "spillover_matrix",
]

# ---------------------------------------------------------------------------------------------
# Population tree: (path, centre share of parent, between-woman sd on the log scale).
# Children of a node are drawn together from a logistic-normal: z = log(centre) + sd * N(0, 1),
# shares = softmax(z). The order is pre-order (a parent before its children).

_L = "Singlets/Live/Lymphocytes"
_TREE: tuple[tuple[str, float, float], ...] = (
    ("Debris", 0.08, 0.35),
    ("Doublets", 0.05, 0.25),
    ("Singlets", 0.87, 0.0),
    ("Singlets/Dead", 0.05, 0.40),
    ("Singlets/Live", 0.95, 0.0),
    ("Singlets/Live/Granulocytes", 0.60, 0.15),
    ("Singlets/Live/Monocytes", 0.08, 0.20),
    ("Singlets/Live/Monocytes/Classical", 0.85, 0.05),
    ("Singlets/Live/Monocytes/Intermediate", 0.05, 0.35),
    ("Singlets/Live/Monocytes/Non-classical", 0.10, 0.30),
    (_L, 0.32, 0.20),
    (f"{_L}/T cells", 0.70, 0.08),
    (f"{_L}/T cells/CD4", 0.61, 0.12),
    (f"{_L}/T cells/CD4/Treg", 0.05, 0.27),
    (f"{_L}/T cells/CD4/Th17", 0.01, 0.35),
    (f"{_L}/T cells/CD4/Th1", 0.04, 0.30),
    (f"{_L}/T cells/CD4/Naive", 0.40, 0.20),
    (f"{_L}/T cells/CD4/Other memory", 0.50, 0.10),
    (f"{_L}/T cells/CD8", 0.33, 0.18),
    (f"{_L}/T cells/DN", 0.04, 0.30),
    (f"{_L}/T cells/DP", 0.02, 0.40),
    (f"{_L}/B cells", 0.11, 0.25),
    (f"{_L}/NK cells", 0.10, 0.35),
    (f"{_L}/NK cells/CD56dim CD16+", 0.90, 0.10),
    (f"{_L}/NK cells/CD56bright CD16-", 0.10, 0.35),
    (f"{_L}/NKT-like", 0.03, 0.40),
    (f"{_L}/Other", 0.06, 0.30),
)

#: Every population path of the tree, parents before children.
NODES: tuple[str, ...] = tuple(p for p, _, _ in _TREE)
_INDEX = {p: i for i, p in enumerate(NODES)}
_PARENT = np.array([_INDEX.get(p.rpartition("/")[0], -1) for p in NODES], dtype=np.intp)
_CENTRE = np.array([c for _, c, _ in _TREE])
_SD = np.array([s for _, _, s in _TREE])
_SIBLINGS: tuple[np.ndarray, ...] = tuple(
    np.flatnonzero(_PARENT == parent) for parent in [-1, *range(len(NODES))] if np.any(_PARENT == parent)
)
_IS_LEAF = np.array([not np.any(_PARENT == i) for i in range(len(NODES))])

#: Leaf populations: the event label of population code ``k`` is ``LEAVES[k]``.
LEAVES: tuple[str, ...] = tuple(p for p, leaf in zip(NODES, _IS_LEAF, strict=True) if leaf)
_LEAF_NODE = np.array([_INDEX[p] for p in LEAVES], dtype=np.intp)
#: Code of the doublet label (its events are sums of two singlets).
DOUBLET_CODE = LEAVES.index("Doublets")
#: Codes of the populations doublets are made of (every singlet).
SINGLET_CODES = np.array([k for k, p in enumerate(LEAVES) if p.startswith("Singlets/")], dtype=np.intp)


def draw_shares(rng: np.random.Generator) -> np.ndarray:
    """Draw one woman's share of parent for every node (logistic-normal per sibling group).

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float64, shape (len(NODES),)
        Share of the parent population; the shares of siblings sum to 1.
    """
    z = np.log(_CENTRE) + _SD * rng.standard_normal(len(NODES))
    shares = np.empty(len(NODES))
    for group in _SIBLINGS:
        e = np.exp(z[group] - z[group].max())
        shares[group] = e / e.sum()
    return shares


@dataclass(frozen=True)
class Effect:
    """One planted effect: a change of a population's share of its parent.

    Attributes
    ----------
    population : str
        Population path (a node of the tree).
    kind : {"add", "multiply"}
        ``add``: the share of parent goes up by ``value`` (0.035 = 3.5 points);
        ``multiply``: the share of parent is multiplied by ``value``.
    value : float
    description : str
        The effect as the design states it, with its source.
    """

    population: str
    kind: str
    value: float
    description: str

    def as_dict(self) -> dict[str, object]:
        """Return the effect as a JSON-ready dict (with its parent population)."""
        return {
            "population": self.population,
            "parent": self.population.rpartition("/")[0],
            "measure": "share_of_parent",
            "kind": self.kind,
            "value": self.value,
            "description": self.description,
        }


#: The effects planted in the immune subgroup of RM women (cohort.md).
EFFECTS: tuple[Effect, ...] = (
    Effect(
        f"{_L}/NK cells",
        "add",
        0.035,
        "NK % of lymphocytes +3.5 points (meta-analysis MD 3.47, 95% CI 2.94-4.00; PMID 31147723)",
    ),
    Effect(f"{_L}/NK cells/CD56dim CD16+", "add", 0.03, "CD56dim CD16+ share of NK +3 points"),
    Effect(f"{_L}/T cells/CD4/Treg", "multiply", 0.88, "Treg % of CD4 -12% relative (d about 0.44)"),
    Effect(f"{_L}/T cells/CD4/Th17", "multiply", 1.6, "Th17 % of CD4 x1.6 (Th17/Treg ratio up)"),
    Effect(f"{_L}/T cells/CD4/Th1", "multiply", 1.3, "Th1 IFN-g+ % of CD4 x1.3"),
)


def apply_effects(shares: np.ndarray, effects: tuple[Effect, ...] = EFFECTS) -> np.ndarray:
    """Return shares with the effects applied; untouched siblings absorb the change proportionally.

    Parameters
    ----------
    shares : ndarray of float64, shape (len(NODES),)
        Shares of parent, as from :func:`draw_shares`.
    effects : tuple of Effect

    Returns
    -------
    ndarray of float64, shape (len(NODES),)
        A new array; every sibling group still sums to 1.
    """
    out = shares.copy()
    for group in _SIBLINGS:
        hit = {_INDEX[e.population]: e for e in effects if _INDEX[e.population] in group}
        if not hit:
            continue
        for i, e in hit.items():
            new = out[i] + e.value if e.kind == "add" else out[i] * e.value
            out[i] = min(max(new, 1e-6), 0.995)
        targeted = np.array(sorted(hit), dtype=np.intp)
        rest = np.setdiff1d(group, targeted)
        free = 1.0 - out[targeted].sum()
        if rest.size:
            out[rest] *= free / out[rest].sum()
        else:
            out[targeted] /= out[targeted].sum()
    return out


def leaf_probabilities(shares: np.ndarray) -> np.ndarray:
    """Return the probability of each leaf population among all events.

    Parameters
    ----------
    shares : ndarray of float64, shape (len(NODES),)

    Returns
    -------
    ndarray of float64, shape (len(LEAVES),)
        Sums to 1.
    """
    absolute = np.empty(len(NODES))
    for i, parent in enumerate(_PARENT):
        absolute[i] = shares[i] * (1.0 if parent < 0 else absolute[parent])
    p = absolute[_LEAF_NODE]
    return p / p.sum()


def node_counts(leaf_counts: np.ndarray) -> np.ndarray:
    """Sum leaf counts up the tree.

    Parameters
    ----------
    leaf_counts : ndarray of int, shape (len(LEAVES),)

    Returns
    -------
    ndarray of int64, shape (len(NODES),)
        Count of every node (a parent holds all its descendants).
    """
    counts = np.zeros(len(NODES), dtype=np.int64)
    counts[_LEAF_NODE] = leaf_counts
    for i in range(len(NODES) - 1, -1, -1):
        if _PARENT[i] >= 0:
            counts[_PARENT[i]] += counts[i]
    return counts


def parent_index(node: int) -> int:
    """Return the index in :data:`NODES` of a node's parent (-1 for top-level populations)."""
    return int(_PARENT[node])


# ---------------------------------------------------------------------------------------------
# Panels: (detector $PnN, marker $PnS) per tube, as a BD-style instrument names them.

#: The two tubes, spelled as on the sample sheet.
TUBES: tuple[str, ...] = ("TBNK-NK", "Treg-Th")

PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "TBNK-NK": (
        ("FITC-A", "CD3"),
        ("PE-A", "CD16"),
        ("PerCP-Cy5.5-A", "CD4"),
        ("PE-Cy7-A", "CD56"),
        ("APC-A", "CD19"),
        ("APC-Cy7-A", "CD8"),
        ("BV421-A", "Viability"),
        ("BV510-A", "CD45"),
        ("BV605-A", "CD14"),
        ("BV786-A", "HLA-DR"),
    ),
    "Treg-Th": (
        ("FITC-A", "CD45RA"),
        ("PE-A", "IL-17A"),
        ("PerCP-Cy5.5-A", "CD4"),
        ("PE-Cy7-A", "CD127"),
        ("APC-A", "FOXP3"),
        ("APC-R700-A", "CD8"),
        ("APC-Cy7-A", "CD3"),
        ("BV421-A", "IFN-g"),
        ("BV510-A", "CD45"),
        ("BV605-A", "CD25"),
    ),
}

#: Every fluorescence detector of the instrument, in $SPILLOVER order.
DETECTORS: tuple[str, ...] = (
    "FITC-A",
    "PE-A",
    "PerCP-Cy5.5-A",
    "PE-Cy7-A",
    "APC-A",
    "APC-R700-A",
    "APC-Cy7-A",
    "BV421-A",
    "BV510-A",
    "BV605-A",
    "BV786-A",
)

# Spill of each fluorochrome (row) into other detectors (columns), typical of a 4-laser instrument.
_SPILL: dict[str, dict[str, float]] = {
    "FITC-A": {"PE-A": 0.15, "PerCP-Cy5.5-A": 0.03, "BV510-A": 0.02},
    "PE-A": {"FITC-A": 0.01, "PerCP-Cy5.5-A": 0.12, "PE-Cy7-A": 0.02, "BV605-A": 0.05},
    "PerCP-Cy5.5-A": {"PE-Cy7-A": 0.10, "APC-R700-A": 0.12, "BV786-A": 0.02},
    "PE-Cy7-A": {"APC-Cy7-A": 0.05, "BV786-A": 0.04, "PerCP-Cy5.5-A": 0.01},
    "APC-A": {"APC-R700-A": 0.25, "APC-Cy7-A": 0.05, "PerCP-Cy5.5-A": 0.01},
    "APC-R700-A": {"APC-A": 0.02, "APC-Cy7-A": 0.20, "PerCP-Cy5.5-A": 0.03},
    "APC-Cy7-A": {"APC-R700-A": 0.06, "PE-Cy7-A": 0.03},
    "BV421-A": {"BV510-A": 0.20, "BV605-A": 0.02},
    "BV510-A": {"BV605-A": 0.10, "FITC-A": 0.08, "BV421-A": 0.01},
    "BV605-A": {"BV786-A": 0.03, "PE-A": 0.04, "PerCP-Cy5.5-A": 0.02},
    "BV786-A": {"PE-Cy7-A": 0.05, "APC-Cy7-A": 0.02, "BV605-A": 0.01},
}


def spillover_matrix(rng: np.random.Generator | None = None, *, drift: float = 0.08) -> np.ndarray:
    """Return the instrument's spillover matrix over :data:`DETECTORS`.

    Parameters
    ----------
    rng : numpy.random.Generator, optional
        When given, every off-diagonal spill varies by a relative ``drift``
        (one acquisition day's setup); otherwise the nominal matrix.
    drift : float, default 0.08
        Relative sd of the day-to-day variation.

    Returns
    -------
    ndarray of float64, shape (11, 11)
        FCS convention ``observed = true @ S``: unit diagonal, off-diagonals in [0, 0.3].
    """
    idx = {d: i for i, d in enumerate(DETECTORS)}
    s = np.eye(len(DETECTORS))
    for src, row in _SPILL.items():
        for dst, value in row.items():
            s[idx[src], idx[dst]] = value
    if rng is not None:
        off = ~np.eye(len(DETECTORS), dtype=bool)
        s[off] *= np.exp(drift * rng.standard_normal(int(off.sum())))
        s[off] = np.clip(s[off], 0.0, 0.3)
    return np.round(s, 6)


# ---------------------------------------------------------------------------------------------
# Expression profiles. Levels are (median, log-sd) of the true signal on the 0..262144 scale.

_LEVELS: dict[str, tuple[float, float]] = {
    "-": (60.0, 0.6),  # autofluorescence only
    "a": (250.0, 0.7),  # sticky/autofluorescent (dead cells, granulocytes)
    "dim": (1500.0, 0.5),
    "int": (5000.0, 0.45),
    "+": (15000.0, 0.4),
    "hi": (45000.0, 0.35),
}
# Relative brightness of each fluorochrome.
_BRIGHT = {
    "FITC-A": 0.8,
    "PE-A": 1.5,
    "PerCP-Cy5.5-A": 0.7,
    "PE-Cy7-A": 1.2,
    "APC-A": 1.3,
    "APC-R700-A": 0.8,
    "APC-Cy7-A": 0.8,
    "BV421-A": 1.3,
    "BV510-A": 0.9,
    "BV605-A": 1.1,
    "BV786-A": 1.0,
}
#: Every marker stained in either tube.
MARKERS: tuple[str, ...] = (
    "CD45",
    "CD3",
    "CD4",
    "CD8",
    "CD19",
    "CD56",
    "CD16",
    "CD14",
    "HLA-DR",
    "Viability",
    "CD25",
    "CD127",
    "FOXP3",
    "CD45RA",
    "IL-17A",
    "IFN-g",
)
# (FSC-A median, log-sd), (SSC-A median, log-sd)
_LYMPH_SCATTER = ((55000.0, 0.12), (14000.0, 0.20))
_T = {"CD45": "hi", "CD3": "+", "CD127": "int"}
_CD4 = {**_T, "CD4": "+"}
_LY = {"CD45": "+"}
_PROFILES: dict[str, tuple[tuple[tuple[float, float], tuple[float, float]], dict[str, str]]] = {
    "Debris": (((9000.0, 0.6), (6000.0, 0.9)), {"Viability": "dim"}),
    "Doublets": (_LYMPH_SCATTER, _CD4),  # replaced by sums of two singlets
    "Singlets/Dead": (
        ((35000.0, 0.35), (35000.0, 0.5)),
        {**dict.fromkeys(MARKERS, "a"), "Viability": "hi", "CD45": "dim"},
    ),
    "Singlets/Live/Granulocytes": (
        ((105000.0, 0.10), (115000.0, 0.18)),
        {**dict.fromkeys(MARKERS, "a"), "CD45": "int", "CD16": "hi", "CD14": "dim", "HLA-DR": "-"},
    ),
    "Singlets/Live/Monocytes/Classical": (
        ((95000.0, 0.12), (42000.0, 0.20)),
        {"CD45": "+", "CD14": "hi", "HLA-DR": "+", "CD4": "dim", "Viability": "a"},
    ),
    "Singlets/Live/Monocytes/Intermediate": (
        ((95000.0, 0.12), (42000.0, 0.20)),
        {"CD45": "+", "CD14": "hi", "CD16": "int", "HLA-DR": "hi", "CD4": "dim", "Viability": "a"},
    ),
    "Singlets/Live/Monocytes/Non-classical": (
        ((90000.0, 0.12), (38000.0, 0.20)),
        {"CD45": "+", "CD14": "dim", "CD16": "+", "HLA-DR": "+", "CD4": "dim", "Viability": "a"},
    ),
    f"{_L}/T cells/CD4/Treg": (_LYMPH_SCATTER, {**_CD4, "CD25": "hi", "CD127": "-", "FOXP3": "+"}),
    f"{_L}/T cells/CD4/Th17": (_LYMPH_SCATTER, {**_CD4, "IL-17A": "+", "CD25": "dim"}),
    f"{_L}/T cells/CD4/Th1": (_LYMPH_SCATTER, {**_CD4, "IFN-g": "+", "CD25": "dim"}),
    f"{_L}/T cells/CD4/Naive": (_LYMPH_SCATTER, {**_CD4, "CD45RA": "+", "CD127": "+"}),
    f"{_L}/T cells/CD4/Other memory": (_LYMPH_SCATTER, {**_CD4, "CD127": "+", "CD25": "dim"}),
    f"{_L}/T cells/CD8": (_LYMPH_SCATTER, {**_T, "CD8": "hi", "CD45RA": "int"}),
    f"{_L}/T cells/DN": (_LYMPH_SCATTER, {**_T, "CD45RA": "dim"}),
    f"{_L}/T cells/DP": (_LYMPH_SCATTER, {**_T, "CD4": "int", "CD8": "int"}),
    f"{_L}/B cells": (_LYMPH_SCATTER, {**_LY, "CD19": "+", "HLA-DR": "+", "CD45RA": "+"}),
    f"{_L}/NK cells/CD56dim CD16+": (
        ((58000.0, 0.12), (16000.0, 0.20)),
        {**_LY, "CD56": "int", "CD16": "+", "CD45RA": "+"},
    ),
    f"{_L}/NK cells/CD56bright CD16-": (
        ((58000.0, 0.12), (15000.0, 0.20)),
        {**_LY, "CD56": "hi", "CD127": "dim", "CD25": "dim", "CD45RA": "+"},
    ),
    f"{_L}/NKT-like": (_LYMPH_SCATTER, {**_T, "CD56": "int", "CD8": "+", "CD16": "dim", "CD45RA": "int"}),
    f"{_L}/Other": (_LYMPH_SCATTER, {**_LY, "CD127": "int"}),
}


def profile_tables(tube: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the log-normal parameters of every leaf population in one tube.

    Parameters
    ----------
    tube : str
        One of :data:`TUBES`.

    Returns
    -------
    mu, sigma : ndarray of float64, shape (len(LEAVES), 2 + n_markers)
        Log-median and log-sd of FSC-A, SSC-A and each marker of the tube's
        panel (in panel order), for each leaf population (rows in code order).
    """
    panel = PANELS[tube]
    mu = np.empty((len(LEAVES), 2 + len(panel)))
    sigma = np.empty_like(mu)
    for k, path in enumerate(LEAVES):
        scatter, levels = _PROFILES[path]
        for j, (median, sd) in enumerate(scatter):
            mu[k, j], sigma[k, j] = np.log(median), sd
        for j, (detector, marker) in enumerate(panel, start=2):
            median, sd = _LEVELS[levels.get(marker, "-")]
            mu[k, j], sigma[k, j] = np.log(median * _BRIGHT[detector]), sd
    return mu, sigma


def expressed(path: str, marker: str) -> str:
    """Return the expression level name (``"-"``, ``"a"``, ``"dim"``, ``"int"``, ``"+"``, ``"hi"``).

    Parameters
    ----------
    path : str
        A leaf population of :data:`LEAVES`.
    marker : str
        A marker of :data:`MARKERS`.
    """
    return _PROFILES[path][1].get(marker, "-")
