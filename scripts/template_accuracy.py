"""Accuracy of the study templates on a synthetic cohort: F1 per population and |error| of % of parent.

    python scripts/template_accuracy.py [--women 12] [--events 50000] [--seed 5] [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowtools.gating.templates import load_template, resolve  # noqa: E402
from flowtools.io import read_fcs  # noqa: E402
from flowtools.io.sample_sheet import read_sample_sheet  # noqa: E402
from flowtools.synth import make_cohort  # noqa: E402
from flowtools.synth.evaluate import STUDY_PARENTS, STUDY_TRUTH_MAP, read_labels, score_sample, summarise  # noqa: E402


def evaluate(women: int, events: int, seed: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_cohort(Path(tmp) / "c", n_women=women, events=events, seed=seed)
        sheet = read_sample_sheet(cohort.samples_csv)
        for name in ("rm_tbnk_nk", "rm_treg_th"):
            t = load_template(REPO / "gating_templates" / f"{name}.yaml")
            rows = []
            for r in sheet:
                if r.tube != t.tube:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = read_fcs(r.file)
                (res,) = resolve(t, [s], sample_ids=[r.sample_id])
                if res.error:
                    print(f"{r.sample_id}: {res.error}", file=sys.stderr)
                    continue
                masks = {p: res.mask(p) for p in res.ids}
                labels, codes, valid = read_labels(cohort.truth_dir, r.sample_id)
                rows += score_sample(masks, labels, codes, STUDY_TRUTH_MAP[name], STUDY_PARENTS[name], valid)
            out[name] = summarise(rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--women", type=int, default=12)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out-json", default=None)
    a = ap.parse_args()
    res = evaluate(a.women, a.events, a.seed)
    for name, rows in res.items():
        print(f"\n{name} ({a.women} women x {a.events} events, seed {a.seed})")
        print(f"{'population':<28}{'n':>4}{'median F1':>11}{'min F1':>9}{'median |err| pts':>18}")
        for r in rows:
            print(f"{r['population']:<28}{r['samples']:>4}{r['median_f1']:>11.3f}{r['min_f1']:>9.3f}"
                  f"{r['median_abs_error_points']:>18.2f}")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
