"""What the commands compute and show: for a trained run, attributions (captum), adversarial
examples, ensemble combinations; for a sweep (nnlab-report), the table of its trials and the plot
of its metric against what it swept. Each module imports its heavy libraries inside its functions."""
