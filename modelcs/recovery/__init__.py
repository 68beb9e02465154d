"""Recovery algorithms: model-based IHT and CoSaMP, Lasso (FISTA), Algorithm 2."""
