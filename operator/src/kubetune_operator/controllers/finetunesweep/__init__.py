"""The FineTuneSweep controller: a template and a search space -> trial
FineTuneJobs chosen by Optuna -> the best trial named (and served).

- `controller`: what it watches, what each event marks, one pass per sweep;
- `observe`: the trials as their FineTuneJobs and the sweep's status show them;
- `act`: what a pass does to trials (create, stop clearly worse ones, suspend, promote);
- `progress`: the sweep's status from its trials (pure).
The study itself (`...sweeps.study`) is rebuilt from the trials on every pass:
there is no state to lose when the operator restarts.
"""

from .controller import FineTuneSweepController

__all__ = ["FineTuneSweepController"]
