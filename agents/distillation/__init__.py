"""Learning from teachers: the policy-distillation losses, the teachers themselves, the schedules of their
weights λ_k and the kickstarter that joins them inside a learner's training step.

* `losses`: the inputs, conventions and checks of a distillation update (Czarnecki et al. 2019), the
  cross-entropy, the pseudo-returns and the student–teacher metrics.
* `variants`: each variant's per-step loss and pseudo-reward, the surrogate whose gradient is the update,
  and the gin `DistillationConfig`.
* `schedules`: λ_k schedules and the `TeacherWeights` variables a schedule or PBT moves.
* `teachers`: what a teacher is (frozen logits and value, its kind, its recurrent state).
* `kickstarting`: the `Kickstarter` a PPO or IMPALA learner holds (Schmitt et al. 2018).
"""
