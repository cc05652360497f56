"""Peer side of ``bench_normalize.py``: run cytonormpy 1.0.2 on a set of FCS files, report JSON.

Runs under the separate interpreter that has cytonormpy (it needs flowio <= 1.3.0, which the
main environment does not have)::

    /tmp/cnpy/bin/python benchmarks/_cytonormpy_peer.py job.json

``job.json``: ``input_dir``, ``output_dir``, ``metadata`` (rows of file_name, reference
``ref``/``other``, batch), ``channels`` ($PnN), ``cofactor`` (arcsinh), ``n_clusters``,
``xdim``, ``ydim``, ``seed``. Prints one JSON object: ``seconds`` (setup + clustering +
quantiles + splines + normalisation, i.e. read, fit and apply with files written),
``files`` (input name -> normalised file), ``version``, ``cluster_cv``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path


def main() -> None:
    """Run the job named on the command line and print its result as JSON."""
    job = json.loads(Path(sys.argv[1]).read_text())
    warnings.simplefilter("ignore")
    import cytonormpy as cnp
    import pandas as pd

    meta = pd.DataFrame(job["metadata"])
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cn = cnp.CytoNorm()
    cn.add_transformer(cnp.AsinhTransformer(cofactors=float(job["cofactor"])))
    cn.add_clusterer(cnp.FlowSOM(n_clusters=int(job["n_clusters"]), xdim=int(job["xdim"]),
                                 ydim=int(job["ydim"]), seed=int(job["seed"])))
    cn.run_fcs_data_setup(metadata=meta, input_directory=job["input_dir"], channels=job["channels"],
                          output_directory=str(out))
    cn.run_clustering(cluster_cv_threshold=2)
    cn.calculate_quantiles()
    cn.calculate_splines(goal="batch_mean")
    cn.normalize_data(n_jobs=1)
    seconds = time.perf_counter() - t0
    files = {}
    for name in meta["file_name"]:
        p = out / f"Norm_{name}"
        if p.is_file():
            files[name] = str(p)
    print(json.dumps({"seconds": seconds, "files": files, "version": getattr(cnp, "__version__", "?")}))


if __name__ == "__main__":
    main()
