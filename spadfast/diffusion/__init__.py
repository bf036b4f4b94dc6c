"""The diffusion itself: noise schedules and PaS, the SPAD perturbation, training targets, the DDIM sampler."""
