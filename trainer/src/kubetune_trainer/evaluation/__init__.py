"""Evaluation: "is the tuned model better at my task?"

- `examples`: test rows as prompts, questions and references;
- `generation`: answers from a model, batched (collective under ZeRO-3);
- `numeric`: the multi-token top-k numeric decoder;
- `scoring`: each answer metric of the registry (kubetune_contract.evaluation_metrics);
- `baselines`: mean, ridge and random-forest regressors on the prompt text;
- `diagnosis`: fit (overfitting, underfitting, instability, divergence);
- `runner`: one model's evaluation on the run's test rows;
- `results`: base vs tuned vs baselines, the verdict, predictions, the compact summary.

The lifecycle (`run.baseline`, `run.evaluate`) calls them; nothing here
touches storage or the metrics endpoint.
"""
