"""kubetune trainer: the containerised fine-tuning entrypoint."""
