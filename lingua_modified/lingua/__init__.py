"""Meta-Lingua-shaped training library: configs, data, models, optimisation, distribution, checkpoints."""
