"""Training: model loading, PEFT, the trainer and the stage loop."""
