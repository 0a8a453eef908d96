"""Monitor metrics: pure functions from tensors (embeddings, activations, gradients, weights, loss
histories) to numbers. No state, no I/O, no thresholds; detectors build on them.

- `geometry`: embedding geometry (effective rank, spectrum, cosines, alignment/uniformity, norms).
- `optimization`: gradient norms, update and weight-norm ratios, non-finite counts.
- `activations`: dead ReLU channels, saturated units, train/eval-mode agreement.
- `method_metrics`: method-specific signals (contrastive negative entropy, EMA distance, MAE baseline).
- `dynamics`: loss-curve shape over a window (improvement, spikes, oscillation).
"""
