"""Models and the evidence about them: the model wrapper, model cards, A/B statistics, outcomes."""
