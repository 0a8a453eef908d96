"""The monitor: a hook the training loop calls, which measures the run and names symptoms. It never
imports the loop.

- metrics, pure functions from tensors to numbers (no state, no I/O, no thresholds): `geometry`,
  `optimization`, `activations`, `method_metrics`, `dynamics`, `tokens`, `stages`, `probes`;
- metric groups, each with its state and `state_dict`: `training_signals`, `embedding_signals`,
  `knn_signals`, reading the fixed probe `buffer` and what `capture` records inside the network;
- `detectors`: rules over the metrics that name a symptom;
- `health`: the hook that schedules the groups and runs the detectors.
"""
