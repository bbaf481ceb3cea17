"""Protégé: reinforcement learning agents that learn from other agents and explore on their own.

The sub-packages live at the repository's root (agents/, networks/, replay/, envs/, binaries/, pbt/,
runtime/, studies/, with the configurations in gin/); this folder links them under one import name, so
`import protege.agents.learners.ppo` works from a wheel and from an editable install alike.
"""

from protege.runtime import tf_stack as _tf_stack

# Keras 2 for TF-Agents on TensorFlow 2.16+, and TF-Agents' NumPy 2 fix: before anything imports them.
_tf_stack.prepare()
