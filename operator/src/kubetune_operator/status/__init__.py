"""From what the cluster shows and what the trainer reports to `status`: pure
functions (the children as observed, the termination message, the trainer's
/metrics, evaluation, tracking, serving, the serving gate, Kueue's Workload)."""
