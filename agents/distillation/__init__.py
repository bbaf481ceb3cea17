"""Learning from teachers: the policy-distillation losses, the teachers themselves, the schedules of their
weights λ_k and the kickstarter that joins them inside a learner's training step.

* `losses`: the inputs, conventions and checks of a distillation update (Czarnecki et al. 2019), the
  cross-entropy, the pseudo-returns and the student–teacher metrics.
* `variants`: each variant's per-step loss and pseudo-reward, the surrogate whose gradient is the update,
  and the gin `DistillationConfig`.
* `schedules`: λ_k schedules and the `TeacherWeights` variables a schedule or PBT moves.
* `teachers`: what a teacher is (frozen logits and value, its kind, its recurrent state), and the
  teachers built from a network (`NetworkTeacher`, the codistillation `PeerTeacher`).
* `teacher_loading`: `load_teacher`, from a PolicySaver export (`saved_policy_teachers`, which chooses what
  an export teaches through) or a Keras model, checked against the student's specs.
* `teacher_set`: the gin `TeacherSet` a learner holds, each teacher routed to the rows of its task.
* `kickstarting`: the `Kickstarter` a PPO or IMPALA learner holds (Schmitt et al. 2018).
"""
