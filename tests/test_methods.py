"""The method registry behind the one LightningModule: config, networks, gradients, the EMA update and its schedule,
and each method end to end through the CLI (pretrain, evaluate, export) and through an exact resume."""
import csv
import json
import math
import typing

import pytest
import pytorch_lightning as pl
import torch
import yaml

from simclr import train
from simclr.cli import main
from simclr.config.methods import METHODS as CONFIG_METHODS, MethodConfig
from simclr.config.run import config_from_dict, load_config
from simclr.config.schema import ConfigError, to_dict
from simclr.methods import METHODS, cosine_momentum
from simclr.module import SimCLRModule, SSLModule

OTHER = ("byol", "vicreg", "mocov3")
MOMENTUM = ("byol", "mocov3")


def module_for(tiny_overrides, method: str, *extra: str) -> SimCLRModule:
    cfg = load_config(None, [*tiny_overrides, f"method.name={method}", *extra])
    torch.manual_seed(0)
    return SSLModule(to_dict(cfg), in_channels=1, num_classes=10, policy={"ops": [{"random_resized_crop": {"size": 16}}]})


# ---------------------------------------------------------------- config
def test_registry_and_config_name_the_same_methods():
    assert set(METHODS) == set(CONFIG_METHODS) == set(typing.get_args(typing.get_type_hints(MethodConfig)["name"]))
    assert {f for f in MethodConfig.__dataclass_fields__ if f != "name"} == set(METHODS) - {"simclr"}
    assert SSLModule is SimCLRModule


@pytest.mark.parametrize("overrides,message", [
    (["method.byol.momentm=0.9"], "method.byol.momentm: unknown key. Did you mean 'momentum_base'? "
                                  "Valid: momentum_base, predictor_hidden_dim."),
    (["method.name=byl"], "method.name: 'byl' is not allowed. Did you mean 'byol'?"),
    (["method.name=byol", "method.vicreg.sim_coeff=3"], "method.vicreg.sim_coeff: 3.0 would be ignored: method.name "
                                                        "is 'byol'. Drop the key, or set method.name=vicreg."),
    (["method.mocov3.temperature=0.1"], "method.mocov3.temperature: 0.1 would be ignored: method.name is 'simclr'"),
    (["method.name=byol", "method.byol.momentum_base=1.5"], "method.byol.momentum_base: 1.5 is out of range"),
    (["method.name=vicreg", "method.vicreg.sim_coeff=0", "method.vicreg.std_coeff=0", "method.vicreg.cov_coeff=0"],
     "method.vicreg.sim_coeff: all three coefficients are 0"),
    (["method.simclr.temperature=0.1"], "method.simclr: unknown key."),  # SimCLR's parameters are loss.*
])
def test_method_keys_are_validated_and_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/digits_cpu.yaml", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_defaults_and_configs_recorded_before_methods():
    cfg = load_config("configs/digits_cpu.yaml")
    assert cfg.method.name == "simclr" and cfg.loss.temperature == 0.2  # SimCLR's keys are where they were
    recorded = {k: v for k, v in to_dict(cfg).items() if k != "method"}  # a checkpoint from before `method:`
    assert config_from_dict(recorded) == cfg
    m = load_config(None, ["data.name=digits", "method.name=mocov3", "method.mocov3.temperature=0.5"]).method
    assert (m.mocov3.temperature, m.mocov3.momentum_base, m.byol.momentum_base) == (0.5, 0.99, 0.99)
    assert (m.vicreg.sim_coeff, m.vicreg.std_coeff, m.vicreg.cov_coeff) == (25.0, 25.0, 1.0)


# ---------------------------------------------------------------- networks and gradients
def test_simclr_checkpoint_keys_are_unchanged(tiny_overrides):
    keys = module_for(tiny_overrides, "simclr").state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"encoder", "head", "probe", "augment"}
    for name in MOMENTUM:
        keys = module_for(tiny_overrides, name).state_dict().keys()
        assert {k.split(".")[0] for k in keys} == {"encoder", "head", "probe", "augment", "method"}
        assert any(k.startswith("method.target_encoder.") for k in keys)
        assert any(k.startswith("method.predictor.") for k in keys)


def test_projector_output_bn_follows_each_paper(tiny_overrides):
    last = {name: type(module_for(tiny_overrides, name).head.net[-1]).__name__ for name in METHODS}
    assert last == {"simclr": "BatchNorm1d", "mocov3": "BatchNorm1d", "byol": "Linear", "vicreg": "Linear"}


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_reach_online_networks_and_never_targets(tiny_overrides, name):
    module = module_for(tiny_overrides, name)
    module.train()
    v1, v2 = torch.rand(2, 8, 1, 16, 16).unbind(0)
    out = module.method.step(module._encode, module.head, v1, v2)
    assert out.features.shape == (16, module.encoder.feature_dim) and out.loss.ndim == 0
    out.loss.backward()
    online = [module.encoder, module.head, *module.method.trainable()]
    for net in online:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    targets = [m for n, m in module.method.named_children() if n.startswith("target_")]
    assert len(targets) == (2 if name in MOMENTUM else 0)
    for net in targets:
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in module.probe.parameters())  # the probe learns from its own loss only


# ---------------------------------------------------------------- EMA and its schedule
def test_cosine_momentum_schedule():
    K = 100
    for base in (0.99, 0.996, 0.0):
        assert cosine_momentum(base, 0, K) == pytest.approx(base, abs=1e-12)
        assert cosine_momentum(base, K, K) == pytest.approx(1.0, abs=1e-12)
        assert cosine_momentum(base, K // 2, K) == pytest.approx((1 + base) / 2, abs=1e-12)
        for k in (1, 17, 63, 99):  # BYOL sec. 3.2: tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2
            assert cosine_momentum(base, k, K) == pytest.approx(1 - (1 - base) * (math.cos(math.pi * k / K) + 1) / 2)
    values = [cosine_momentum(0.99, k, K) for k in range(K + 1)]
    assert values == sorted(values)


@pytest.mark.parametrize("name", MOMENTUM)
def test_targets_start_as_copies_and_ema_equals_the_formula(tiny_overrides, name):
    module = module_for(tiny_overrides, name, f"method.{name}.momentum_base=0.9")
    pairs = [(module.method.target_encoder, module.encoder), (module.method.target_head, module.head)]
    for target, online in pairs:
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            assert torch.equal(t, o)
    with torch.no_grad():
        for online in (module.encoder, module.head):
            for p in online.parameters():
                p.add_(torch.randn_like(p))
    before = [[t.detach().clone().double() for t in target.parameters()] for target, _ in pairs]
    step, total = 3, 10
    logs = module.method.after_optimizer_step(module.encoder, module.head, step, total)
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * step / total) + 1) / 2
    assert logs == {"momentum": pytest.approx(tau, abs=1e-12)}
    for (target, online), old in zip(pairs, before):
        for t, o, t0 in zip(target.parameters(), online.parameters(), old, strict=True):
            torch.testing.assert_close(t.double(), tau * t0 + (1 - tau) * o.detach().double(), atol=1e-6, rtol=0)
            assert not torch.equal(t, o)


# ---------------------------------------------------------------- end to end
ASYMMETRIC = """name: byol_digits
shared:
  - random_resized_crop: {size: 16, scale: [0.5, 1.0]}
views:
  - ops:
      - gaussian_blur: {p: 1.0}
      - normalize: {mean: [0.3], std: [0.4]}
  - ops:
      - gaussian_blur: {p: 0.1}
      - solarize: {p: 0.2}
      - normalize: {mean: [0.3], std: [0.4]}
"""


@pytest.mark.parametrize("name", OTHER)
def test_cli_pretrain_evaluate_export(name, tiny_overrides, tmp_path, capsys):
    """`simclr pretrain --config configs/digits_cpu.yaml method.name=NAME trainer.max_epochs=1`, then evaluate and
    export exactly as for a SimCLR run."""
    args = ["pretrain", "--config", "configs/digits_cpu.yaml", f"method.name={name}", "trainer.max_epochs=1",
            *tiny_overrides, "trainer.max_epochs=1", f"name={name}", "trainer.log_every_n_steps=1"]
    if name == "byol":  # BYOL's asymmetric views (blur / solarize per branch) after a shared crop, sized for digits
        (tmp_path / "asym.yaml").write_text(ASYMMETRIC)
        args.append(f"policy={tmp_path / 'asym.yaml'}")
    assert main(args) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / name
    if name == "byol":
        recorded = yaml.safe_load((run / "policy.yaml").read_text())
        assert "shared" in recorded and [len(v["ops"]) for v in recorded["views"]] == [2, 3]
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and math.isfinite(status["metrics"]["train/loss_epoch"])
    rows = list(csv.DictReader(open(run / "csv" / "part-1" / "metrics.csv")))
    assert any(r.get("train/loss_step") for r in rows) and any(r.get("train/probe_acc") for r in rows)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state, hp = ckpt["state_dict"], ckpt["hyper_parameters"]
    assert hp["config"]["method"]["name"] == name
    # the optimizer steps exactly the online networks, the method's predictor and the probe: never a target
    module = SSLModule(hp["config"], hp["in_channels"], hp["num_classes"], hp["policy"])
    stepped = sum(len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"])
    assert stepped == sum(1 for net in [module.encoder, module.head, module.probe, *module.method.trainable()]
                          for _ in net.parameters())
    if name in MOMENTUM:
        total = 4  # TINY: 200 training images, 50 per batch, 1 epoch
        logged = sorted(float(r["train/momentum"]) for r in rows if r.get("train/momentum"))
        assert logged == pytest.approx([cosine_momentum(0.99, k, total) for k in range(total)], abs=1e-6)
        target = {k.removeprefix("method.target_encoder."): v for k, v in state.items()
                  if k.startswith("method.target_encoder.")}
        online = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        assert target.keys() == online.keys()
        assert any(not torch.equal(target[k], online[k]) for k in target if target[k].is_floating_point())

    assert main(["evaluate", str(run), "--protocol", "knn", "--no-baselines"]) == 0
    record = json.loads((run / "eval" / "eval-1" / "results.json").read_text())
    assert 0 <= record["metrics"]["simclr"]["knn_k20"]["top1"] <= 1
    assert main(["export", str(run), "--format", "state_dict"]) == 0
    exported = torch.load(run / "export" / "backbone-state_dict.pth", weights_only=True)
    assert exported.keys() == {k.removeprefix("encoder.") for k in state if k.startswith("encoder.")}
    for k, v in exported.items():
        assert torch.equal(v, state[f"encoder.{k}"])  # the online encoder, not the target


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        trainer.should_stop = True


def test_byol_interrupted_then_resumed_equals_uninterrupted(tiny_overrides):
    """The EMA target (and the predictor) are in the checkpoint: a resumed BYOL run ends bit-identical."""
    over = [*tiny_overrides, "method.name=byol", "trainer.knn_monitor_every=0"]
    full = train.run(load_config(None, over))
    cut = train.run(load_config(None, [*over, "name=cut"]), callbacks=[StopAfterFirstEpoch()])
    train.run(resume=cut.run_dir)
    a = torch.load(full.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(cut.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any(k.startswith("method.target_encoder.") for k in a)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
