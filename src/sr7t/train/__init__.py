"""Teacher training and the training loop shared with distillation."""
