"""One controller per resource kind, each on the shared runtime (`..runtime`)."""

from .finetunejob import FineTuneJobController
from .finetunesweep import FineTuneSweepController
from .servingpool.controller import ServingPoolController

CONTROLLERS = (FineTuneJobController, ServingPoolController, FineTuneSweepController)
