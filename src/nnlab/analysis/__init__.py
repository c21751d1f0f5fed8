"""What the commands on a trained run compute: attributions (captum), adversarial examples,
ensemble combinations. Each module imports its heavy libraries inside its functions."""
