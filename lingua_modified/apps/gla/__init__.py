"""GLA5 / GDN2 / Mamba2 training, evaluation and generation."""
