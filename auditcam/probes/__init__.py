"""Probes: tests that run the model again on changed inputs or weights (counterfactual
backgrounds, the sanity check, feature maps); each gives estimates of the same kind as the analysis."""
