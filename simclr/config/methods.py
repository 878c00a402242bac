"""The `method:` section of the run config: which self-supervised method runs, and each method's own parameters.

One section per method, so a mistyped key is named with the valid ones (`method.byol.momentm: unknown key. Did you
mean 'momentum_base'?`), and a key of a method that is not running is refused instead of ignored. SimCLR's own
parameters stay where they always were (`loss.temperature`): its configs and recorded runs read unchanged.
simclr.methods registers the implementations under the same names (tests/test_methods.py checks they agree).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simclr.config.schema import FieldError

MOMENTUM = {"range": (0.0, 1.0), "help": "EMA rate of the target network at step 0; a cosine schedule raises it "
            "to 1 at the last step"}
PREDICTOR = {"range": (1, 65536), "help": "hidden units of the predictor MLP; null: model.head_hidden_dim"}


@dataclass(frozen=True)
class BYOLConfig:
    """Grill et al. 2020: online encoder+projector+predictor regresses an EMA target's projection."""
    momentum_base: float = field(default=0.99, metadata=MOMENTUM)
    predictor_hidden_dim: int | None = field(default=None, metadata=PREDICTOR)


@dataclass(frozen=True)
class VICRegConfig:
    """Bardes et al. 2022: invariance (MSE) + variance (hinge on each dimension's std) + covariance terms."""
    sim_coeff: float = field(default=25.0, metadata={"range": (0.0, 1000.0), "help": "lambda, invariance"})
    std_coeff: float = field(default=25.0, metadata={"range": (0.0, 1000.0), "help": "mu, variance"})
    cov_coeff: float = field(default=1.0, metadata={"range": (0.0, 1000.0), "help": "nu, covariance"})

    def __post_init__(self):
        if self.sim_coeff == self.std_coeff == self.cov_coeff == 0:
            raise FieldError("sim_coeff", "all three coefficients are 0: the loss would be 0 and nothing would train.")


@dataclass(frozen=True)
class MoCoV3Config:
    """Chen et al. 2021: InfoNCE between the query branch (with predictor) and a momentum encoder's keys."""
    temperature: float = field(default=0.2, metadata={"range": (1e-3, 10.0)})
    momentum_base: float = field(default=0.99, metadata=MOMENTUM)
    predictor_hidden_dim: int | None = field(default=None, metadata=PREDICTOR)


METHODS = ("simclr", "byol", "vicreg", "mocov3")


@dataclass(frozen=True)
class MethodConfig:
    """`name` picks the method; each other method's own parameters sit in its section (SimCLR's are `loss`)."""
    name: Literal["simclr", "byol", "vicreg", "mocov3"] = "simclr"
    byol: BYOLConfig = field(default_factory=BYOLConfig)
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)
    mocov3: MoCoV3Config = field(default_factory=MoCoV3Config)

    def __post_init__(self):
        # a section of a method that is not running would be ignored: refuse it (as with stream-only data keys)
        for section in METHODS[1:]:
            if section == self.name:
                continue
            params, default = getattr(self, section), type(getattr(self, section))()
            for key in params.__dataclass_fields__:
                if getattr(params, key) != getattr(default, key):
                    raise FieldError(f"{section}.{key}", f"{getattr(params, key)!r} would be ignored: method.name "
                                     f"is '{self.name}'. Drop the key, or set method.name={section}.")
