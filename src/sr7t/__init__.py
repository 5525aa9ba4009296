"""sr7t: 1.5T to 7T-like MRI super-resolution (guided diffusion teacher, staged distillation)."""

__version__ = "0.1.0"
# The log line of every sr7t process: a workflow stage, the CLI, a worker (sr7t.parallel).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
