"""The training run: the learner loop and everything around it.

* `settings`: `RunSettings`, the gin configurable `train` (the run's budget, sequence length, network,
  learner, evaluation and checkpoint intervals), and its checks.
* `trainer`: `train()` and `Trainer`, the run an iteration at a time (collect, learn, summaries,
  evaluations, checkpoints, the final export and summary.json).
* `collection`: how a run collects its trajectories: in turn with the learner (`LocalCollection`), in
  an actor thread (`ThreadedCollection`) or by actors in other processes (`RemoteCollection`).
* `actor`: the `Actor` that steps the environments with the policy and writes trajectories, and its
  background thread.
* `components`: what every job of a run builds the same way: environment specs, the network, the
  Reverb tables.
* `progress`: the progress line a run prints.
* `summaries`: what a run records for TensorBoard at its start (the operative config as text, the
  hyperparameters for HParams), its scalars read back across resumes, and the `curves.png` drawn from them.
* `evaluation`: evaluating a policy network on fresh environments.
* `policy_export`: the TF-Agents policy and its SavedModel export.
* `strategy`: choosing the `tf.distribute` strategy from flags.
* `numerics`: mixed precision and XLA options of the learner.
* `deployment`: the other jobs of a distributed run, the Reverb server and the actors.
* `saved_network`: an exported policy or a checkpoint as a network, for evaluation.
* `video`: recording a policy's episodes to a .gif or .mp4.
"""
