"""What every command shares at the terminal: rich output, one-paragraph errors, exit codes."""
