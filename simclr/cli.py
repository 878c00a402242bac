"""`simclr` command line. Thin: every command calls the same functions a Python user would."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from simclr.config.schema import ConfigError, describe
from simclr.data.formats import DataError

USER_ERRORS = (ConfigError, DataError, FileExistsError, FileNotFoundError)


def _guess_dataset(path: str | None) -> str:
    if path is None:
        return "digits"
    p = Path(path)
    if p.is_dir() and any(p.glob("*-idx3-ubyte*")):
        return "fashion_mnist"
    if p.is_dir() and (any(p.glob("*_X.bin")) or (p / "stl10_binary").is_dir()):
        return "stl10"
    return "cifar10" if "cifar" in p.name.lower() else "imagefolder"


def _no_overwrite(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; choose another --out or pass --force to replace it.")
    return path


# ---------------------------------------------------------------- policy
def cmd_policy(args) -> int:
    from simclr.augment import REGISTRY, load_policy
    from simclr.augment.policy import shipped

    if args.action == "list":
        for name in shipped():
            pol = load_policy(name)
            print(f"{name:24s} {pol.description}")
        return 0
    if args.action == "ops":
        for name, op in sorted(REGISTRY.items()):
            print(f"{name}: {(op.__doc__ or '').strip().splitlines()[0] if op.__doc__ else ''}")
            for line in describe(op.Params):
                print(f"    {line}")
        return 0
    if not args.policy:
        raise ConfigError(f"simclr policy {args.action}: give a POLICY file or shipped name.")
    pol = load_policy(args.policy)
    if args.action == "check":
        print(f"# {pol.source}: valid")
        print(pol.to_yaml(), end="")
        return 0
    # show
    import torch

    from simclr.augment.grid import policy_grid
    from simclr.config.run import DataConfig
    from simclr.data import load_split, per_class_indices

    dataset = args.dataset or _guess_dataset(args.data)
    data = load_split(DataConfig(name=dataset, path=args.data), "train")
    if (data.labels >= 0).any():  # one image per class, so the grid shows the dataset's variety
        idx = per_class_indices(data.labels, 1, args.seed)[: args.n]
    else:
        idx = torch.arange(min(args.n, len(data)))
    out = policy_grid(pol, data.images[idx], _no_overwrite(Path(args.out), args.force), views=args.views,
                      seed=args.seed)
    print(f"wrote {out} ({len(idx)} {dataset} images x {args.views} views, policy {pol.name})")
    return 0


# ---------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> int:
    from simclr import train
    from simclr.config.run import load_config

    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume continues a run with its saved config.yaml; drop --config and overrides.")
        result = train.run(resume=args.resume)
    else:
        result = train.run(load_config(args.config, args.overrides))
    print(f"run directory: {result.run_dir}")
    for key in ("train/loss_epoch", "monitor/knn_top1"):
        if key in result.metrics:
            print(f"  {key} = {result.metrics[key]:.4f}")
    if args.evaluate:
        from simclr.evaluate import evaluate_run
        evaluate_run(result.run_dir, protocols=args.evaluate.split(","))
    return 0


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from simclr.evaluate import evaluate_run

    evaluate_run(args.target, protocols=args.protocol.split(","), data_path=args.data, dataset=args.dataset,
                 plot=args.plot, baselines=not args.no_baselines, overrides=args.overrides)
    return 0


# ---------------------------------------------------------------- ablate
def cmd_ablate(args) -> int:
    from simclr.ablate import report, run_ablation

    if args.spec == "report":
        if not args.dir:
            raise ConfigError("simclr ablate report DIR: give the ablation directory.")
        report(Path(args.dir), metric=args.metric, reference=args.reference)
        return 0
    run_ablation(args.spec, dry_run=args.dry_run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simclr", description="SimCLR pretraining, augmentation ablations, evaluation.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("policy", help="list, validate, or look at augmentation policies")
    p.add_argument("action", choices=["list", "ops", "check", "show"])
    p.add_argument("policy", nargs="?", help="policy YAML path or shipped name")
    p.add_argument("--data", help="dataset path for `show` (default: scikit-learn digits)")
    p.add_argument("--dataset", help="cifar10, cifar100, fashion_mnist, stl10, imagefolder, digits (default: guessed)")
    p.add_argument("--out", default="policy_grid.png")
    p.add_argument("--n", type=int, default=8, help="images (rows)")
    p.add_argument("--views", type=int, default=6, help="augmented samples per image (columns)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_policy)

    p = sub.add_parser("pretrain", help="pretrain a SimCLR encoder")
    p.add_argument("--config", help="run config YAML (see configs/)")
    p.add_argument("--resume", help="run directory to continue from its last checkpoint")
    p.add_argument("--evaluate", help="after training, evaluate with these protocols, e.g. knn,linear")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_epochs=5 policy=x.yaml")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="frozen-feature evaluation of a run or checkpoint")
    p.add_argument("target", help="run directory or .ckpt file")
    p.add_argument("--protocol", default="knn,linear", help="comma list of knn, linear, diagnostics")
    p.add_argument("--data", help="dataset path (default: the run's)")
    p.add_argument("--dataset", help="dataset name (default: the run's)")
    p.add_argument("--plot", action="store_true", help="write the invariance-profile PNG")
    p.add_argument("--no-baselines", action="store_true", help="skip raw-pixel and random-init baselines")
    p.add_argument("overrides", nargs="*", help="data.* / eval.* overrides, e.g. data.test_per_class=100")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ablate", help="run an augmentation ablation, or `ablate report DIR`")
    p.add_argument("spec", help="ablation spec YAML, or the word `report`")
    p.add_argument("dir", nargs="?", help="with `report`: the ablation directory")
    p.add_argument("--dry-run", action="store_true", help="list arms and their resolved policies; run nothing")
    p.add_argument("--metric", help="with `report`: the metric to plot, e.g. knn_k20/top1 (default: linear/top1)")
    p.add_argument("--reference", help="with `report`: the arm paired differences are taken against (default: "
                                       "the spec's `reference`); writes results_vs_ARM.*")
    p.set_defaults(func=cmd_ablate)
    return ap


def quiet_library_noise() -> None:
    """Hide third-party notices that say nothing about the user's run."""
    import warnings
    for pattern in (".*LeafSpec.*", ".*overridden `on_after_batch_transfer`.*", ".*litlogger.*",
                    ".*does not have many workers.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage() and "TPU available" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options (`evaluate RUN --data X data.test_per_class=5`)
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognised arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    quiet_library_noise()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from simclr.utils import tune_cpu_allocator
    tune_cpu_allocator()
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `simclr policy ops | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
