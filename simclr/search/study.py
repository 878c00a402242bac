"""`simclr search SPEC`: augmentation-policy search with Optuna (TPE), one trial = one ordinary run.

Runbook:
    simclr search spec.yaml --dry-run          # the space, base policy, storage; runs nothing
    simclr search spec.yaml                    # trials up to `trials`, then outputs + best-vs-base on test
    simclr search spec.yaml --worker           # extra workers (same machine, or jobs sharing `storage`)
    simclr search spec.yaml --report           # outputs again from the storage alone

Each trial trains through `train.run` (its own run directory `runs/trial-NNNN`, its policy in
`policies/trial-NNNN.yaml`) and is scored by `evaluate.proxies.selection_metrics` (validation split
carved from train and label-free proxies; never test). All objectives are stored on every trial
(user_attrs). The kNN monitor's values are reported to the trial each monitor epoch, so a median
pruner can stop weak trials early. Resumable: storage is the record; a worker interrupted (Ctrl-C)
or killed (heartbeat older than 2x `heartbeat_seconds`) leaves a FAIL trial whose parameters are
re-enqueued once and whose run directory is resumed from its last checkpoint. Nothing is overwritten.
Ctrl-C says in one line how to resume. One `simclr search SPEC` per study (it holds the study's launch lock,
simclr.ablate.lock: two would both run the final comparison); any number of `--worker`s join it.
One trial: simclr.search.trial.
"""
from __future__ import annotations

import fcntl
import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from simclr.ablate import lock as launch_lock
from simclr.search.cost import Eta, announce_cost
from simclr.search.report import write_outputs
from simclr.search.spec import SearchSpec, base_policy, load_search_spec
from simclr.search.trial import retry, run_trial
from simclr.config.files import same_file
from simclr.config.schema import ConfigError, to_dict
from simclr.utils import write_json_atomic

LOCK = ".trial.lock"
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
# fields that define a study: changing any of them mid-way would mix two searches in one storage
IDENTITY = ("name", "base_config", "base_policy", "overrides", "objective", "space", "seed", "startup_trials",
            "pruner")


def study_dir(spec: SearchSpec) -> Path:
    return Path(spec.output_dir) / spec.name


def storage_url(spec: SearchSpec) -> str:
    return spec.storage or f"sqlite:///{(study_dir(spec) / 'study.db').resolve()}"


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def _storage(spec: SearchSpec) -> optuna.storages.RDBStorage:
    url = storage_url(spec)
    if url in _STORAGES:  # one engine per process, however many times the study is reopened
        return _STORAGES[url]
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None  # wait on a busy file
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; they are how dead workers are found
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            _STORAGES[url] = optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_stale_trial_callback=retry,
                heartbeat_interval=spec.heartbeat_seconds)
        except (SQLAlchemyError, ImportError) as e:  # unreachable server, missing file, missing DB driver
            raise ConfigError(f"storage {url}: cannot open it: {str(e).splitlines()[0]}") from None
    return _STORAGES[url]


def open_study(spec: SearchSpec, sampler_seed: int | None = None, create: bool = False) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=spec.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.startup_trials,
                                         n_warmup_steps=spec.pruner.warmup_epochs) if spec.prunes \
        else optuna.pruners.NopPruner()
    if create:
        return optuna.create_study(storage=_storage(spec), study_name=spec.name, direction="maximize",
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    try:
        return optuna.load_study(study_name=spec.name, storage=_storage(spec), sampler=sampler, pruner=pruner)
    except KeyError:
        raise ConfigError(f"storage {storage_url(spec)}: no study named '{spec.name}'; run `simclr search SPEC` "
                          "first.") from None


def _identity(spec: SearchSpec) -> dict:
    return {k: to_dict(getattr(spec, k)) for k in IDENTITY}


def prepare(spec: SearchSpec, spec_path: Path) -> Path:
    """Create the study directory, or continue it only if it holds this same search (trials, final and
    storage may change; the space, objective and base may not)."""
    root = study_dir(spec)
    record = root / "search.json"
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):  # workers starting together: one creates, the others then find search.json
        if record.exists():
            before = json.loads(record.read_text())["identity"]
            now = json.loads(json.dumps(_identity(spec)))
            changed = [k for k in IDENTITY if before.get(k) != now.get(k)
                       and not (k == "base_config" and same_file(str(before.get(k)), now[k]))]  # one file, two ways
            if changed:
                raise ConfigError(f"{root}: holds a search with different {', '.join(changed)} than {spec_path}; "
                                  "a study cannot change its space mid-way. Use a new name or output_dir.")
            return root
        if any(p.name not in (LOCK, launch_lock.LOCK) for p in root.iterdir()):
            raise ConfigError(f"{root}: exists and is not a search directory (no search.json); refusing to mix. "
                              "Use a new name or output_dir.")
        (root / "policies").mkdir()
        (root / "spec.yaml").write_text(spec_path.read_text())
        (root / "base_policy.yaml").write_text(base_policy(spec).to_yaml())
        write_json_atomic(record, {"identity": _identity(spec), "storage": storage_url(spec)})
    return root


@contextmanager
def _locked(root: Path):
    """Counting trials and creating the next one happen under a lock, so local workers never overshoot."""
    with open(root / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState} | {"all": len(trials)}


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during `simclr search`: one line saying how to resume, which the CLI prints (exit 130,
    143 for SIGTERM). The storage is the record: an interrupted trial is failed and, once its run has started,
    enqueued again, so the next `simclr search` resumes that run first."""

    def __init__(self, spec: SearchSpec, resume: str, cause: BaseException, trial: int | None = None):
        self.signal_name = getattr(cause, "signal_name", None) or getattr(cause.__cause__, "signal_name", "SIGINT")
        where = f"trial {trial} of search '{spec.name}'" if trial is not None else f"search '{spec.name}'"
        super().__init__(f"{self.signal_name} during {where}; resume with: {resume}")


def run_search(spec_path: str | Path, worker: bool = False, dry_run: bool = False, report_only: bool = False) -> Path:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec_path = Path(spec_path)
    spec = load_search_spec(spec_path)
    if dry_run:
        return _dry_run(spec)
    resume = f"simclr search {spec_path}" + (" --worker" if worker else " --report" if report_only else "")
    try:
        if report_only:
            if not (study_dir(spec) / "search.json").exists():
                raise ConfigError(f"{study_dir(spec)}: no search here yet; run `simclr search {spec_path}` first.")
            return write_outputs(spec, open_study(spec), study_dir(spec), run_final=False)
        root = prepare(spec, spec_path)
        if worker:  # workers share a study by design: no launch lock
            return _search(spec, root, resume, worker=True)
        # one main process per study: two would both run the final comparison, training its arms twice at once
        with launch_lock.study_lock(root, resume, f"Wait for it to end, or add workers with `{resume} --worker`."):
            return _search(spec, root, resume, worker=False)
    except SearchInterrupted:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # silenced while the interrupted trial was recorded
        raise
    except KeyboardInterrupt as e:  # between trials, waiting for other workers, or in the final comparison
        raise SearchInterrupted(spec, resume, e) from None


def _search(spec: SearchSpec, root: Path, resume: str, worker: bool) -> Path:
    """Trials until the study has `trials` of them (taken by any worker), then (not a worker) the outputs."""
    with _locked(root):  # two workers creating a fresh storage's tables at once collide ("table ... already exists")
        study = open_study(spec, create=True)
    eta = Eta(spec, study)
    announce_cost(spec, study, root, storage_url(spec))
    ran: list[int] = []
    while True:
        with _locked(root) as lock:
            with warnings.catch_warnings():  # experimental in Optuna, but the documented way to find dead workers
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            counts = _counts(study)
            todo = counts[TrialState.WAITING] or sum(counts[s] for s in ACTIVE) < spec.trials
            if todo:
                seed = spec.seed * 1_000_003 + counts["all"]  # distinct per trial, reproducible for one worker
                study = open_study(spec, sampler_seed=seed)

                def objective(trial, _lock=lock):
                    fcntl.flock(_lock, fcntl.LOCK_UN)  # the trial exists now: other workers may go on
                    ran.append(trial.number)
                    try:
                        return run_trial(trial, spec, root)
                    except KeyboardInterrupt as e:
                        # Optuna records the trial as failed and logs that with the interrupt's traceback: the
                        # CLI says it in one line instead
                        optuna.logging.set_verbosity(optuna.logging.ERROR)
                        raise SearchInterrupted(spec, resume, e, trial.number) from None

                study.optimize(objective, n_trials=1)  # creates the trial under the lock, then releases it
        if todo:
            eta.trial_done(study, ran[-1])
            continue
        running = counts[TrialState.RUNNING]
        if worker or not running:
            break
        print(f"    waiting for {running} trial(s) running in other workers ...", flush=True)
        time.sleep(min(10, spec.heartbeat_seconds))
    if worker:
        print(f"worker done: study '{spec.name}' has its {spec.trials} trials taken.")
        return root
    return write_outputs(spec, study, root, run_final=spec.final.enabled)


def _dry_run(spec: SearchSpec) -> Path:
    print(f"search '{spec.name}': {spec.trials} trials, objective {spec.objective} (maximised), "
          f"{'median pruning on the kNN monitor' if spec.prunes else 'no pruning'}")
    print(f"storage: {storage_url(spec)}\nspace:")
    for op, space in spec.space.items():
        if space.toggle:
            print(f"  {op}.on: true | false")
        for key, dim in space.params.items():
            rng = f"{list(dim.choices)}" if dim.choices is not None else f"[{dim.low:g}, {dim.high:g}]" + \
                (" log" if dim.log else "") + (f" step {dim.step:g}" if dim.step else "")
            print(f"  {op}.{key}: {rng}" + (f" ({dim.bound} end)" if dim.bound else ""))
        if space.fixed:
            print(f"  {op} fixed: {space.fixed}")
    print("\n## base policy")
    print(base_policy(spec).to_yaml(), end="")
    return study_dir(spec)
