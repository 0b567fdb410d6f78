"""What the kubetune operator and trainer agree on, declared once.

- `base`: the strict camelCase model every API and config object derives from;
- `rules`: cross-field rules, each with its CEL text for the API server and its
  Python check for `kubetune validate` and the trainer, under one message;
- `sections`: the spec sections the trainer consumes as they are (model, dataset,
  adapter, quantization, training, checkpoint, output, tracking), with their
  defaults;
- `config`: `TrainerConfig`, the fully explicit JSON the operator renders;
- `checkpoints`: the checkpoint layout in object storage;
- `formats`: dataset row formats, their detection and their row checks;
- `metric_names`: the trainer's Prometheus names, which the operator scrapes.
"""
