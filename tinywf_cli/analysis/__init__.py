"""Reading flows without running them: their steps, transitions and commands, drawn."""
