"""The serving-pool controller: one vLLM Deployment (and Service) per
(namespace, `spec.serving.pool`), serving every trained member's adapter on the
members' shared base model.

- `members`: the pool's jobs, as the FineTuneJob cache shows them, and which of
  them are served (trained, agreeing with the pool's first member);
- `controller`: what it watches, what each event marks, one pass per pool.
FineTuneJob status stays the FineTuneJob controller's: it reads the pool's
Deployment to say whether its own adapter is served.

What it watches (the pool's Deployment and pods, keyed by the pool label) is
declared with the FineTuneJob controller's watches in `..watches`. (Nothing is
imported here: the FineTuneJob controller imports `members`.)
"""
