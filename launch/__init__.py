"""`protege-launch`: a distributed run's jobs (Reverb server, actors, learner) placed and kept alive by Ray."""
