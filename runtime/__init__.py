"""What every run shares below the agents: its settings (gin), its directory, its errors, its interrupts,
one-line read-only accessors (`properties`), the plotting helper every figure is drawn with
(`plotting`, matplotlib imported on first use), and what `import protege` sets for TensorFlow and TF-Agents
on either stack (`tf_stack`)."""
