"""The data-free training loop: `DataFreeDistiller` trains a generator and a student against a frozen
teacher (one compiled step: a generator update and the student's updates; every `reinit_interval` steps
the generator's samples go into the pool and the generator is re-initialised), and
`check_distiller_settings` refuses settings that cannot work before anything is built."""

import inspect
import math
import time
from typing import Any, Callable, Dict, Optional, Tuple

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.agents.data_free import adapters
from protege.agents.data_free import exemplar_pool
from protege.agents.data_free import generators
from protege.agents.data_free import losses
from protege.agents.data_free import teacher_support
from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teachers
from protege.runtime import config as run_config
from protege.runtime import errors


_LR_SCHEDULES = ('constant', 'cosine')


def check_distiller_settings(num_steps, batch_size, generator_learning_rate, student_learning_rate,
                             student_learning_rate_schedule, student_updates_per_step, reinit_interval,
                             pool_capacity, pool_samples_per_generator, pool_batch_fraction,
                             selection, selection_factor) -> None:
  """Raises ConfigError, one line naming the setting and the fix, on a `DataFreeDistiller` setting that
  cannot work: a non-positive learning rate, budget or size, a negative interval, an unknown schedule.

  Checked when the distiller is built and, by `distill_data_free`, before anything else (the teacher is
  not loaded for a configuration that would be refused).
  """
  run_config.check_number('DataFreeDistiller.generator_learning_rate', generator_learning_rate, 0,
                          meaning="the generator's Adam step size")
  run_config.check_number('DataFreeDistiller.student_learning_rate', student_learning_rate, 0,
                          meaning="the student's Adam step size")
  if student_learning_rate_schedule not in _LR_SCHEDULES:
    raise errors.ConfigError('DataFreeDistiller.student_learning_rate_schedule='
                             f'{student_learning_rate_schedule!r} is unknown; use one of {_LR_SCHEDULES}.')
  for argument, value, meaning in (('num_steps', num_steps, 'the training budget in steps'),
                                   ('batch_size', batch_size, 'generated observations per step'),
                                   ('student_updates_per_step', student_updates_per_step, ''),
                                   ('pool_capacity', pool_capacity, 'exemplars the pool holds'),
                                   ('pool_samples_per_generator', pool_samples_per_generator, ''),
                                   ('selection_factor', selection_factor, 'draws per observation kept')):
    run_config.check_number(f'DataFreeDistiller.{argument}', value, 0, integer=True, meaning=meaning)
  run_config.check_number('DataFreeDistiller.reinit_interval', reinit_interval, 0, inclusive=True,
                          integer=True, meaning='steps between generator re-initialisations, 0: never')
  if selection not in SELECTIONS:
    raise errors.ConfigError(f'DataFreeDistiller.selection={selection!r} is unknown; use one of {SELECTIONS}.')
  if not 0.0 <= pool_batch_fraction <= 4.0:
    raise errors.ConfigError(f'DataFreeDistiller.pool_batch_fraction must be in [0, 4], got '
                             f'{pool_batch_fraction!r}.')


SELECTIONS = ('none', 'hardest', 'balanced')


def select_rows(selection: str, teacher_logits: tf.Tensor, student_logits: tf.Tensor, count: int) -> tf.Tensor:
  """`[count]` indices of the rows of `[N, A]` logits to keep: 'hardest', the `count` largest KL(T‖S);
  'balanced', round-robin over the teacher's argmax actions in row order (every action's first row, then
  every action's second, ...), so each action is kept as often as the rows allow."""
  if selection == 'hardest':
    score = losses.teacher_student_kl(teacher_logits, student_logits)
  else:
    one_hot = tf.one_hot(tf.argmax(teacher_logits, axis=-1), tf.shape(teacher_logits)[-1])
    rank_in_action = tf.reduce_sum(tf.cumsum(one_hot, axis=0, exclusive=True) * one_hot, axis=-1)
    score = -rank_in_action   # top_k keeps the lower row first among equal scores
  return tf.math.top_k(score, count).indices


def bound_distiller_settings() -> Dict[str, Any]:
  """The arguments of `check_distiller_settings` as gin will pass them to `DataFreeDistiller`: its
  defaults, then the bindings."""
  names = inspect.signature(check_distiller_settings).parameters
  defaults = inspect.signature(DataFreeDistiller.__init__).parameters
  settings = {name: defaults[name].default for name in names}
  settings.update({k: v for k, v in gin.get_bindings(DataFreeDistiller).items() if k in names})
  return settings


def _load_feed_forward_teacher(teacher, observation_spec, action_spec) -> teachers.Teacher:
  """`teacher_loading.load_teacher(teacher, ...)`, refused (PolicyLoadError) on observations that are not float (no
  input gradient for the generator) and on a recurrent teacher."""
  if not tf.as_dtype(observation_spec.dtype).is_floating:
    raise errors.PolicyLoadError(f'the observations are {tf.as_dtype(observation_spec.dtype).name} '
                                 f'({observation_spec!r}); the generator learns through gradients of '
                                 'the teacher with respect to its input, which integer inputs (e.g. uint8 '
                                 'Atari frames) do not have. Distil a teacher whose inputs are float (for '
                                 'frames: scaled to [0, 1]; for a policy export of uint8 frames, '
                                 'distill_data_free rebuilds one with teacher_network_fn).')
  loaded = teacher_loading.load_teacher(teacher, observation_spec, action_spec)
  if loaded.is_recurrent:
    raise errors.PolicyLoadError(f'teacher {loaded.source!r} is recurrent; data-free distillation '
                                 'generates single observations and needs a feed-forward teacher.')
  return loaded


def _build_generator(generator_fn: Callable[..., generators.Generator], observation_spec,
                     teacher: teachers.Teacher) -> generators.Generator:
  """`generator_fn(observation_spec)`, checked to be a `Generator`, with its variables created. A generator
  that `needs_teacher` (`support='teacher'`, `paired_channels` without `pair_affinity`) is built again from its
  config completed with what the teacher's first layer says (`_config_from_teacher`)."""
  generator = generator_fn(observation_spec)
  if not isinstance(generator, generators.Generator):
    raise errors.ConfigError('generator_fn must build an agents.data_free.generators.Generator, got '
                             f'{type(generator).__name__}.')
  if generator.needs_teacher:
    generator = type(generator)(**_config_from_teacher(generator, teacher))
  generator.build_variables()
  return generator


def _config_from_teacher(generator: generators.Generator, teacher: teachers.Teacher) -> dict:
  """`generator.config` with `support='teacher'` replaced by the teacher's input support and the pairs'
  `pair_affinity` filled in, both read from the teacher's first-layer kernels (read once); prints both."""
  config = dict(generator.config)
  shape = generator.observation_shape
  kernels = teacher_support.teacher_kernels(teacher, shape)
  if isinstance(config.get('support'), str):
    mask = teacher_support.input_support(kernels, shape, config['support_ratio'])
    per_channel = ', '.join(str(int(n)) for n in mask.reshape(-1, mask.shape[-1]).sum(axis=0))
    print(f'Generator support read from the teacher\'s first layer: {int(mask.sum())} of {mask.size} '
          f'coordinates (per channel: {per_channel}).', flush=True)
    config['support'] = mask
  if config.get('paired_channels') and config.get('pair_affinity') is None:
    config['pair_affinity'] = teacher_support.cell_affinities(kernels, shape, config['paired_channels'])
    print(f'Generator pairs {config["paired_channels"]}: cells drawn by the similarity of the teacher\'s '
          'first-layer rows.', flush=True)
  return config


def _loss_weight_variables(**weights: float) -> Dict[str, tf.Variable]:
  """The generator's loss weights as non-trainable variables `{term: <term>_weight}`."""
  return {term: tf.Variable(float(weight), trainable=False, name=f'{term}_weight')
          for term, weight in weights.items()}


def _student_learning_rate(learning_rate: float, schedule: str, updates: int):
  """The student's learning rate: constant, or cosine-decayed to 0 over `updates` updates."""
  if schedule == 'cosine':
    return tf.keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=updates)
  return learning_rate


@gin.configurable
class DataFreeDistiller(tf.Module):
  """Trains a generator and a student against a frozen teacher, without data (see the package docstring,
  `agents/data_free/__init__.py`).

  One `train_step` = one generator update and `student_updates_per_step` student updates; the first
  student update shares the generator's batch (as DAFL's loop), the others draw fresh samples. Every
  `reinit_interval` steps `train` archives the generator's samples into the pool and re-initialises it.
  The loss weights are non-trainable `tf.Variable`s (`weights`), read when the compiled step runs, so a
  controller may change them between steps.

  With `selection`, each batch is chosen among `selection_factor` · B draws (scored without gradients; the
  kept latents are generated again for the step): 'hardest' keeps the B on which the student is furthest from
  the teacher (largest KL(T‖S)); 'balanced' keeps as many of each of the teacher's actions (its argmax) as the
  draws allow, the class balance DAFL's information-entropy term asks of the generator, obtained by choosing
  frames instead of moving the generator. For an untrained generator (the structured MinAtar files) either
  moves the batch without moving the frames off the spec's structure.
  """

  def __init__(self, teacher, student, observation_spec, action_spec,
               generator_fn: Callable[..., generators.Generator] = generators.ImageGenerator,
               teacher_features_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               num_steps: int = 2000,
               batch_size: int = 256,
               generator_learning_rate: float = 0.2,
               student_learning_rate: float = 2e-3,
               student_learning_rate_schedule: str = 'constant',
               student_updates_per_step: int = 1,
               one_hot_weight: float = 1.0,
               information_entropy_weight: float = 5.0 / math.log(10.0),
               activation_weight: float = 0.1,
               adversarial_weight: float = 0.0,
               reinit_interval: int = 0,
               pool_capacity: int = 20000,
               pool_samples_per_generator: int = 2048,
               pool_batch_fraction: float = 0.5,
               selection: str = 'none',
               selection_factor: int = 4,
               seed: int = 0,
               name: str = 'DataFreeDistiller'):
    """Loads the teacher, builds the generator, the pool and both optimisers.

    Args:
      teacher: Anything `agents.distillation.teacher_loading.load_teacher` takes: a Keras classifier (or its file), a
        PolicySaver export directory, or a `Teacher`. It must be feed-forward.
      student: A Keras model mapping `[B, *obs_shape]` to logits `[B, A]`, or an `ActorCriticNetwork`
        (only its policy is trained; its value heads get no gradient).
      observation_spec: The spec of one observation (what the generator makes).
      action_spec: The discrete action (class) spec, a scalar integer `BoundedTensorSpec`.
      generator_fn: `generator_fn(observation_spec)` returns a `Generator`. Default `ImageGenerator` (gin:
        `@ImageGenerator`, `@VectorGenerator` or `@StructuredGenerator`, configured on their own).
      teacher_features_fn: Maps observations `[B, *obs_shape]` to the teacher's penultimate features
        `[B, F]` (differentiably), for the activation loss. Default None: no activation term (then
        `activation_weight` must be 0).
      num_steps: Training steps `train` runs. Default 2000.
      batch_size: B, generated observations per step. Default 256 (DAFL uses 512 on a GPU).
      generator_learning_rate: Adam's learning rate for the generator. Default 0.2, DAFL's: on MNIST, 1e-3
        let the generator settle on a few prototypes and the student stall near 85% (BENCHMARKS.md).
      student_learning_rate: Adam's learning rate for the student. Default 2e-3, DAFL's.
      student_learning_rate_schedule: 'constant' (default, DAFL's for MNIST) or 'cosine': decayed to 0
        over `num_steps · student_updates_per_step` updates (for short budgets).
      student_updates_per_step: Student updates per generator update. Default 1 (DAFL's; DFAD uses 5).
      one_hot_weight: w_oh. Default 1.0 (DAFL).
      information_entropy_weight: w_ie, in nats. Default 5 / ln 10 ≈ 2.17 (DAFL's 5 in log10 units).
      activation_weight: w_a. Default 0.1 (DAFL's MNIST value); must be 0 without `teacher_features_fn`.
      adversarial_weight: w_adv, the weight of −KL(T‖S) in the generator's loss. Default 0.0 (off: the
        DAFL baseline); the Generative Adversarial Simulator sets it > 0 (its value is not public; the
        shipped configurations use the values measured in BENCHMARKS.md).
      reinit_interval: Steps between generator re-initialisations; 0 (default) never re-initialises.
      pool_capacity: Exemplars the pool holds (first in, first out). Default 20,000.
      pool_samples_per_generator: Samples of each generator archived before it is re-initialised. Default
        2048.
      pool_batch_fraction: Pool exemplars added to each student batch, as a fraction of B, once the pool is
        non-empty. Default 0.5.
      selection: How a batch's B generated observations are chosen among k · B draws (see the class
        docstring): 'none' (default, B draws), 'hardest' or 'balanced'.
      selection_factor: k, draws per kept observation when `selection` is not 'none'. Default 4.
      seed: Seed of the latent noise, the pool's sampling and the re-initialised generators' weights (the
        first networks' weights: set `tf.keras.utils.set_random_seed`). Default 0.
      name: Module name.

    Raises:
      ConfigError: On a bad setting (`check_distiller_settings`) or an activation weight without features.
      PolicyLoadError: On a recurrent teacher or one of integer inputs.
    """
    super().__init__(name=name)
    check_distiller_settings(num_steps, batch_size, generator_learning_rate, student_learning_rate,
                             student_learning_rate_schedule, student_updates_per_step, reinit_interval,
                             pool_capacity, pool_samples_per_generator, pool_batch_fraction,
                             selection, selection_factor)
    self.observation_spec = tensor_spec.from_spec(observation_spec)
    self.action_spec = tensor_spec.from_spec(action_spec)
    self.teacher = _load_feed_forward_teacher(teacher, self.observation_spec, self.action_spec)
    if teacher_features_fn is None and activation_weight != 0:
      raise errors.ConfigError(f'DataFreeDistiller.activation_weight={activation_weight!r} needs the teacher\'s '
                               'features; give teacher_features_fn or set the activation weight to 0.')
    self.student = student
    self._student_policy_variables = self._policy_variables()
    self._teacher_features_fn = teacher_features_fn
    self._generator_fn = generator_fn
    self.generator = _build_generator(generator_fn, self.observation_spec, self.teacher)
    self.num_steps = num_steps
    self.batch_size = batch_size
    self.selection = selection
    self.selection_factor = selection_factor if selection != 'none' else 1
    self.student_updates_per_step = student_updates_per_step
    self.reinit_interval = reinit_interval
    self.pool_samples_per_generator = pool_samples_per_generator
    self.pool_batch_size = int(round(pool_batch_fraction * batch_size))
    self.weights = _loss_weight_variables(one_hot=one_hot_weight, information_entropy=information_entropy_weight,
                                          activation=activation_weight, adversarial=adversarial_weight)
    self._use_features = teacher_features_fn is not None
    self._use_adversarial = adversarial_weight != 0
    self.generator_optimizer = tf.keras.optimizers.Adam(generator_learning_rate)
    self.student_optimizer = tf.keras.optimizers.Adam(_student_learning_rate(
        student_learning_rate, student_learning_rate_schedule, num_steps * student_updates_per_step))
    self.pool = exemplar_pool.ExemplarPool(self.generator.observation_shape, pool_capacity, seed=seed + 1,
                                           dtype=self.observation_spec.dtype)
    self._create_counters_and_steps(seed)

  def _create_counters_and_steps(self, seed: int) -> None:
    """The step and generation counters, the latent noise's random generator and the compiled functions."""
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self.generation = tf.Variable(0, dtype=tf.int64, trainable=False, name='generation')
    self._seed = seed
    self._rng = tf.random.Generator.from_seed(seed)
    self._step_fn = tf.function(self._train_step, autograph=False)
    self._sample_fn = tf.function(self._sample_batch, autograph=False)

  # -- the compiled step ------------------------------------------------------------------------------

  def _policy_variables(self):
    """The student's variables its logits depend on (an ActorCriticNetwork's value torso and heads are
    left out), found once with a probe batch."""
    probe = tf.zeros((2,) + tuple(self.observation_spec.shape), self.observation_spec.dtype)
    with tf.GradientTape() as tape:
      logits = adapters.student_logits(self.student, probe, training=False)
    variables = self.student.trainable_variables
    gradients = tape.gradient(logits, variables)
    policy_variables = [v for v, g in zip(variables, gradients) if g is not None]
    if not policy_variables:
      raise errors.ConfigError(f'the student {getattr(self.student, "name", self.student)!r} has no '
                               'trainable variables its logits depend on.')
    return policy_variables

  def _student_variables(self):
    return self._student_policy_variables

  def _teacher_logits(self, observations):
    return adapters.differentiable_teacher_logits(self.teacher, observations)

  def _latents(self) -> tf.Tensor:
    """The step's `[B, latent_dim]` latents: B draws, or B of `selection_factor` · B draws chosen by
    `selection` (`select_rows`)."""
    z = self.generator.sample_latent(self.batch_size * self.selection_factor, self._rng)
    if self.selection == 'none':
      return z
    candidates = self.generator(z, training=True)
    teacher_logits = self._teacher_logits(candidates)
    student_logits = adapters.student_logits(self.student, candidates, training=False)
    return tf.gather(z, select_rows(self.selection, tf.stop_gradient(teacher_logits),
                                    tf.stop_gradient(student_logits), self.batch_size))

  def _train_step(self) -> Dict[str, tf.Tensor]:
    z = self._latents()
    student_variables = self._student_variables()
    with tf.GradientTape(persistent=True) as tape:
      generated = self.generator(z, training=True)
      observations = generated
      if self.pool_batch_size:
        observations = tf.concat([generated, self.pool.sample_if_not_empty(self.pool_batch_size)], axis=0)
      teacher_logits = self._teacher_logits(observations)
      logits = adapters.student_logits(self.student, observations, training=True)
      generated_teacher_logits = teacher_logits[:self.batch_size]
      features = self._teacher_features_fn(generated) if self._use_features else None
      g_loss, terms = losses.generator_loss(
          generated_teacher_logits, logits[:self.batch_size] if self._use_adversarial else None, features,
          one_hot_weight=self.weights['one_hot'],
          information_entropy_weight=self.weights['information_entropy'],
          activation_weight=self.weights['activation'] if self._use_features else 0.0,
          adversarial_weight=self.weights['adversarial'] if self._use_adversarial else 0.0)
      s_loss = losses.student_loss(teacher_logits, logits)
    # An action-only teacher's targets have no gradient with respect to its input: the generator then
    # moves by its adversarial term only (zeros, not None, keep the optimiser's step well defined).
    generator_gradients = tape.gradient(g_loss, self.generator.trainable_variables,
                                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    student_gradients = tape.gradient(s_loss, student_variables)
    del tape
    self.generator_optimizer.apply_gradients(zip(generator_gradients, self.generator.trainable_variables))
    self.student_optimizer.apply_gradients(zip(student_gradients, student_variables))
    for _ in range(self.student_updates_per_step - 1):
      self._student_update()
    self.step.assign_add(1)
    agreement = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(generated_teacher_logits, -1),
                                                tf.argmax(logits[:self.batch_size], -1)), tf.float32))
    class_probs = tf.reduce_mean(tf.nn.softmax(generated_teacher_logits), axis=0)
    metrics = {f'generator/{key}': value for key, value in terms.items()}
    metrics.update({
        'generator/loss': g_loss,
        'student/loss': s_loss,
        'student/kl_generated': tf.reduce_mean(losses.teacher_student_kl(generated_teacher_logits,
                                                                         logits[:self.batch_size])),
        'student/agreement_generated': agreement,
        'generator/class_entropy': -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(class_probs),
                                                                          class_probs)),
    })
    return metrics

  def _student_update(self):
    observations = tf.stop_gradient(self.generator(self._latents(), training=True))
    if self.pool_batch_size:
      observations = tf.concat([observations, self.pool.sample_if_not_empty(self.pool_batch_size)], axis=0)
    teacher_logits = self.teacher.logits_and_value(observations)[0]
    variables = self._student_variables()
    with tf.GradientTape() as tape:
      loss = losses.student_loss(teacher_logits,
                                 adapters.student_logits(self.student, observations, training=True))
    self.student_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  def _sample_batch(self):
    return self.generator(self.generator.sample_latent(self.batch_size, self._rng), training=True)

  # -- eager control ------------------------------------------------------------------------------------

  def checkpoint_items(self) -> Dict[str, Any]:
    """What a checkpoint must hold to resume training where it stopped: both networks, both optimisers
    (built here, so a restore fills their moments), the pool, the step and generation counters and the
    random generator of the latent noise."""
    self.generator_optimizer.build(self.generator.trainable_variables)
    self.student_optimizer.build(self._student_variables())
    return {'generator': self.generator, 'student': self.student,
            'generator_optimizer': self.generator_optimizer, 'student_optimizer': self.student_optimizer,
            'pool': self.pool, 'step': self.step, 'generation': self.generation, 'rng': self._rng}

  def train_step(self) -> Dict[str, float]:
    """One step (generator and student updates); returns its metrics as floats."""
    metrics = self._step_fn()
    return {key: float(value.numpy()) for key, value in metrics.items()}

  def sample(self, count: int) -> np.ndarray:
    """`count` observations of the current generator, `[count, *obs_shape]` (in batches of B, BN in
    training mode as during training)."""
    batches = [self._sample_fn().numpy() for _ in range(-(-count // self.batch_size))]
    return np.concatenate(batches, axis=0)[:count]

  def archive_generator(self) -> None:
    """Adds `pool_samples_per_generator` of the current generator's samples to the pool."""
    self.pool.add(self.sample(self.pool_samples_per_generator), generation=self.generation)

  def reinitialize_generator(self) -> None:
    """Resets the generator's weights (and BatchNorm statistics) to a fresh initialisation, and its
    optimiser's state (moments and step count), so the next generator starts anew.

    The fresh weights are drawn under the global seeds `seed · 1000 + next generation`
    (`tf.keras.utils.set_random_seed`: Keras draws unseeded initialisers from Python's `random`, TF's
    seed alone does not fix them), so they depend on the generation only: a run resumed from a
    checkpoint re-initialises exactly as an uninterrupted one (the distiller's other randomness is its own
    `tf.random.Generator`, which the checkpoint holds).
    """
    tf.keras.utils.set_random_seed(self._seed * 1000 + int(self.generation.numpy()) + 1)
    fresh = type(self.generator)(**self.generator.config)
    fresh.build_variables()
    for variable, value in zip(self.generator.variables, fresh.variables):
      if variable.shape != value.shape:
        raise RuntimeError(f'generator variable {variable.name} {variable.shape} has no twin in a fresh '
                           f'generator ({value.name} {value.shape}).')
      variable.assign(value)
    for variable in self.generator_optimizer.variables:
      variable.assign(tf.zeros_like(variable))
    self.generation.assign_add(1)

  def train(self, num_steps: Optional[int] = None, log_every: int = 0,
            log_fn: Optional[Callable[[int, Dict[str, float]], None]] = None,
            save_fn: Optional[Callable[[], None]] = None, save_interval_seconds: float = 600.0,
            stop_fn: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
    """Runs `num_steps` steps (default: the configured `num_steps`), re-initialising the generator every
    `reinit_interval` steps after archiving its samples into the pool.

    Args:
      num_steps: Steps to run. Default None: `self.num_steps`.
      log_every: Call `log_fn(step, metrics)` every this many steps (counted from 0, so a resumed run logs
        at the same steps) and at the last step. 0: never.
      log_fn: The logging callback.
      save_fn: Called every `save_interval_seconds` of training (e.g. to write a checkpoint). Default None.
      save_interval_seconds: Seconds between calls of `save_fn`. Default 600.
      stop_fn: Polled after every step (e.g. `runtime.interrupts.StopRequest`); once it returns True the
        loop ends early. Default None.

    Returns:
      `{'steps', 'generations', 'pool_size', 'seconds', 'history': [(step, metrics), ...], 'final': metrics,
      'stopped'}`; `stopped` is True when `stop_fn` ended the loop before `num_steps`.
    """
    num_steps = self.num_steps if num_steps is None else num_steps
    history = []
    metrics = {}
    start = last_save = time.time()
    last = int(self.step.numpy()) + num_steps
    for _ in range(num_steps):
      step = int(self.step.numpy())
      if self.reinit_interval and step > 0 and step % self.reinit_interval == 0:
        self.archive_generator()
        self.reinitialize_generator()
      metrics = self.train_step()
      done = step + 1
      if log_every and (done % log_every == 0 or done == last):
        history.append((done, metrics))
        if log_fn is not None:
          log_fn(done, metrics)
      if save_fn is not None and time.time() - last_save >= save_interval_seconds:
        save_fn()
        last_save = time.time()
      if stop_fn is not None and done < last and stop_fn():
        break
    return {'steps': int(self.step.numpy()), 'generations': int(self.generation.numpy()) + 1,
            'pool_size': int(self.pool.size.numpy()), 'seconds': time.time() - start, 'history': history,
            'final': metrics, 'stopped': int(self.step.numpy()) < last}

  def exemplars(self, count_from_current: int) -> Tuple[np.ndarray, np.ndarray]:
    """The pool's exemplars and `count_from_current` samples of the current generator, with the generation
    each came from: `(observations [N, ...], generation [N])`."""
    pooled, generation = self.pool.contents()
    current = self.sample(count_from_current) if count_from_current else pooled[:0]
    observations = np.concatenate([pooled, current], axis=0)
    generations = np.concatenate([generation, np.full(len(current), int(self.generation.numpy()))])
    return observations, generations
