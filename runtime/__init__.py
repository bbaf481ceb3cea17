"""What every run shares below the agents: its settings (gin), its directory, its errors, its interrupts,
one-line read-only accessors (`properties`), and the plotting helper every figure is drawn with
(`plotting`, matplotlib imported on first use)."""
