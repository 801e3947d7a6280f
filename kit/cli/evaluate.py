"""`python -m kit evaluate`: one report on a model and a deletion request.

For the model (a kit checkpoint, or your own with --arch/--weights) and the request
(--forget-ids, --forget-k or --forget-class with --seed) it writes one row into
`--out/report.csv` (+ `report.json`, the configuration): accuracy in [0, 1] on D_f, D_r
(optionally a seeded sample, --retain-max) and D_test; D_f accuracy over its neighbourhood
views (`kit.evaluation.neighbourhood`); one membership inference attack trained on D_r vs
D_test and asked about D_f (`kit.evaluation.privacy`); and, with --reference (a model
retrained without D_f), its accuracies, the agreement and the mean KL(reference || model) in
nats per split (`kit.evaluation.metrics`). Checked before computing, written all or nothing.
"""
from __future__ import annotations

import math

from torch.utils.data import Subset

from ..core.checkpoint import check_compatible, load_checkpoint, read_sidecar, sidecar_path
from ..core.results import save_results
from ..core.files import atomic_dir
from .commands import prepare
from .external import build_user_model, check_dataset, check_sha, complete, user_spec
from .forget import request_record
from .inputs import UsageError, bad_input, existing_file

MIA_COLUMNS = {"auc": "mia_auc", "member_rate": "mia_member_rate",
               "mia_efficacy": "mia_efficacy"}


def load_reference(path, job):
    """The retrained model: a kit checkpoint, weights the kit wrote for a user model, or plain
    weights of the evaluated model's own architecture."""
    data = job.data
    meta = read_sidecar(path) if sidecar_path(path).is_file() else None
    if meta is not None and "arch" in meta:
        check_dataset(meta, data, path)
        spec = user_spec(meta)
        if spec is None:
            check_compatible(meta, data)
            return load_checkpoint(path)
        check_sha(path, meta)
        return build_user_model(complete(spec, data), path, "--reference")
    if job.spec is None:
        raise UsageError(f"--reference '{path}' has no kit sidecar '{sidecar_path(path)}': give "
                         f"a kit checkpoint (.pt with its .json), or give the model as --arch "
                         f"and --weights so that plain weights are read as that architecture")
    return build_user_model(job.spec, path, "--reference")


def _mia(models: dict, splits: dict, args) -> dict:
    """Membership inference columns (NaN when D_r or D_test has fewer than 2 instances)."""
    from ..evaluation.privacy import mia_table

    n = min(len(splits["retain"]), len(splits["test"]), args.mia_samples)
    suffix = {"model": "", "reference": "_ref"}
    if n < 2:
        return {f"{c}{suffix[m]}": math.nan for m in models for c in MIA_COLUMNS.values()}
    table = mia_table(models, members=splits["retain"], non_members=splits["test"],
                      targets=splits["forget"], attacks=(args.attack,), seed=args.seed,
                      max_samples=args.mia_samples, cv_folds=min(5, n))
    out = {}
    for row in table.to_dict("records"):
        out.update({f"{c}{suffix[row['model']]}": float(row[k]) for k, c in MIA_COLUMNS.items()})
    return out


def run_evaluate(args) -> int:
    from ..evaluation.metrics import compare_to_reference, split_accuracies
    from ..evaluation.neighbourhood import SPEC

    with bad_input():
        extra = []
        if args.reference:
            existing_file(args.reference, "--reference")
            extra = [("--reference file", args.reference),
                     ("--reference sidecar", sidecar_path(args.reference))]
        job = prepare(args, inputs=extra)
        reference = load_reference(args.reference, job).to(job.device) if args.reference else None
    model, data, req = job.model, job.data, job.req
    retain = req.retain_sample(args.retain_max)
    splits = {"forget": (req.x, req.y), "retain": Subset(data.train, retain.tolist()),
              "test": data.test}
    source = ({"checkpoint": job.source} if job.spec is None
              else {"weights": job.source, "arch": job.spec["arch"]})
    row = {**source, "dataset": data.name, "k": req.k, "seed": args.seed,
           "n_retain": len(retain), "n_test": len(data.test),
           **{f"acc_{s}": v for s, v in split_accuracies(model, data, req,
                                                         retain_max=args.retain_max).items()},
           "mia_attack": args.attack}
    models = {"model": model, **({"reference": reference} if reference is not None else {})}
    row.update(_mia(models, splits, args))
    if reference is not None:
        for r in compare_to_reference(model, reference, splits=splits).to_dict("records"):
            row.update({f"acc_ref_{r['split']}": r["acc_ref"],
                        f"agreement_{r['split']}": r["agreement"], f"kl_{r['split']}": r["kl"]})
    config = {"command": "evaluate", **source, "spec": job.spec, "dataset": data.name,
              "seed": args.seed, "retain_max": args.retain_max, "reference": args.reference,
              "attack": args.attack, "mia_samples": args.mia_samples, "neighbourhood": SPEC,
              **request_record(req, data)}
    try:
        with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
            save_results([row], tmp / "report.csv", config=config)
    except FileExistsError as e:                     # another run wrote --out meanwhile
        raise UsageError(f"--out: {e}") from e
    ref = (f", agreement with the reference on D_test {row['agreement_test']:.3f}"
           if reference is not None else "")
    print(f"evaluated {job.source} on {req.k} forget instances: forget {row['acc_forget']:.3f}, "
          f"retain {row['acc_retain']:.3f}, test {row['acc_test']:.3f}, MIA member rate on D_f "
          f"{row['mia_member_rate']:.3f}{ref}; wrote {args.out}")
    return 0
