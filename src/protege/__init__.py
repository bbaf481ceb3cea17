"""Protégé: reinforcement learning agents that learn from other agents and explore on their own.

The sub-packages live at the repository's root (agents/, networks/, replay/, envs/, binaries/, pbt/,
runtime/, studies/, with the configurations in gin/); this folder links them under one import name, so
`import protege.agents.learners.ppo` works from a wheel and from an editable install alike.
"""
