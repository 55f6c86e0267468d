"""Where results go: the metrics collector and its HTTP(S) server, dead letters, checkpoints."""
