"""Hyper-parameter sweeps: the search space against a template (`space`) and
Optuna's study over the trials (`study`). The FineTuneSweep controller and
`kubetune sweep` both use these."""
