"""Data-free policy distillation (the Generative Adversarial Simulator): see `distiller`."""
