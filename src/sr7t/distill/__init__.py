"""Progressive distillation of the teacher into few-step students."""
