"""sr7t: 1.5T to 7T-like MRI super-resolution (guided diffusion teacher, staged distillation)."""

__version__ = "0.1.0"
