"""kubetune operator: FineTuneJob API, builders, Kopf handlers and the kubetune CLI."""
