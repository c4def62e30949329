"""Evaluation shared by the lab and the training monitor: batched generation and scoring."""
