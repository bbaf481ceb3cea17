"""Tests for agents/data_free/teacher_support.py: the input support read from a teacher's first layer, on
synthetic kernels (against the rule written out in NumPy) and on a policy trained here with Adam and exported
as train_main exports its policies, whose never-active inputs it must find exactly; and the StructuredGenerator
a DataFreeDistiller builds with support='teacher' keeps every cell inside that support."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.data_free import distiller as distiller_lib
from protege.agents.data_free import generators
from protege.agents.data_free import teacher_support
from protege.agents.distillation import teacher_loading
from protege.agents.training import policy_export
from protege.networks import actor_critic
from protege.networks import torsos
from protege.runtime import errors

SHAPE = (6, 6, 4)
FRAME_SPEC = tensor_spec.BoundedTensorSpec(SHAPE, tf.float32, 0.0, 1.0, name='observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 2, name='action')


def _frames(rng, count):
  """Frames whose active cells lie in `_known_support()`: channel 0 (one object) in the bottom row only,
  channel 1 (one object) anywhere above it, channel 2 binary in rows 0-1, channel 3 never on."""
  frames = np.zeros((count,) + SHAPE, np.float32)
  rows = np.arange(count)
  frames[rows, 5, rng.integers(0, 6, count), 0] = 1.0
  frames[rows, rng.integers(0, 5, count), rng.integers(0, 6, count), 1] = 1.0
  frames[:, :2, :, 2] = rng.uniform(size=(count, 2, 6)) < 0.5
  return frames


def _rule_labels(frames):
  """Towards the channel-1 object's column from the channel-0 object's (0 left, 2 right), or stay (1) when they
  are level or channel 2 holds more than 6 cells: a rule that reads every channel that is ever on."""
  column_0 = frames[..., 0].sum(axis=1).argmax(-1)
  column_1 = frames[..., 1].max(axis=1).argmax(-1)
  return np.where(frames[..., 2].sum(axis=(1, 2)) > 6, 1, np.sign(column_1 - column_0) + 1)


def _known_support():
  support = np.zeros(SHAPE, bool)
  support[5, :, 0] = True
  support[:5, :, 1] = True
  support[:2, :, 2] = True
  return support


def test_input_support_is_the_rows_that_moved_from_their_initialisation():
  rng = np.random.default_rng(0)
  support = _known_support()
  kernel = rng.uniform(-0.1, 0.1, (support.size, 256))         # as initialised
  kernel[support.reshape(-1)] *= rng.uniform(1.8, 6.0, (int(support.sum()), 1))   # trained rows grew
  np.testing.assert_array_equal(teacher_support.input_support([kernel], SHAPE), support)
  # The rule in NumPy: norm > ratio x median norm of the quietest quarter.
  norms = np.linalg.norm(kernel, axis=1)
  reference = np.median(np.sort(norms)[:len(norms) // 4])
  np.testing.assert_array_equal(teacher_support.input_support([kernel], SHAPE, ratio=3.0).reshape(-1),
                                norms > 3.0 * reference)
  # A second first-layer kernel (a separate value torso) that moved a row adds it to the support.
  other = rng.uniform(-0.1, 0.1, kernel.shape)
  other[0] *= 10.0
  assert teacher_support.input_support([kernel, other], SHAPE).reshape(-1)[0] and not support.reshape(-1)[0]
  with pytest.raises(errors.ConfigError, match=r'no dense first layer on the flattened observation \(a kernel \[144'):
    teacher_support.input_support([], SHAPE)
  with pytest.raises(errors.ConfigError, match='support_ratio must be > 1, got 1.0'):
    teacher_support.input_support([kernel], SHAPE, ratio=1.0)
  with pytest.raises(errors.ConfigError, match='do not split into trained and untouched ones'):
    teacher_support.input_support([rng.uniform(-0.1, 0.1, kernel.shape)], SHAPE)


@pytest.fixture(scope='module')
def trained_teacher(tmp_path_factory):
  """A policy (an MLP ActorCriticNetwork) trained with Adam to imitate a rule on `_frames` that reads every
  channel that is ever on, exported with policy_export as train_main exports its policies."""
  tf.keras.utils.set_random_seed(0)
  network = actor_critic.ActorCriticNetwork(FRAME_SPEC, ACTION_SPEC,
                                            torso_fn=lambda: torsos.MLPTorso(layer_sizes=(128,), activation='relu'))
  network.create_variables()
  optimizer = tf.keras.optimizers.Adam(1e-2)
  rng = np.random.default_rng(1)
  for _ in range(600):
    frames = _frames(rng, 64)
    labels = _rule_labels(frames)
    with tf.GradientTape() as tape:
      (logits, _), _ = network(frames, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, network.trainable_variables), network.trainable_variables))
  directory = str(tmp_path_factory.mktemp('teacher') / 'policy')
  return policy_export.export_policy(network, ts.time_step_spec(FRAME_SPEC), ACTION_SPEC, directory)


def test_the_support_of_a_trained_policy_export_is_exactly_the_inputs_it_saw(trained_teacher):
  teacher = teacher_loading.load_teacher(trained_teacher, FRAME_SPEC, ACTION_SPEC)
  np.testing.assert_array_equal(teacher_support.teacher_input_support(teacher, SHAPE), _known_support())


def test_the_distiller_builds_a_structured_generator_inside_the_teachers_support(trained_teacher, capsys):
  student = actor_critic.ActorCriticNetwork(FRAME_SPEC, ACTION_SPEC,
                                            torso_fn=lambda: torsos.MLPTorso(layer_sizes=(16,)))
  student.create_variables()
  generator_fn = lambda spec: generators.StructuredGenerator(spec, latent_dim=4, hidden_sizes=(8,),  # noqa: E731
                                                             one_cell_channels=(0, 1), support='teacher')
  distiller = distiller_lib.DataFreeDistiller(trained_teacher, student, FRAME_SPEC, ACTION_SPEC,
                                              generator_fn=generator_fn, num_steps=4, batch_size=32,
                                              activation_weight=0.0, adversarial_weight=1.0, reinit_interval=2)
  assert 'Generator support read from the teacher\'s first layer: 48 of 144 coordinates (per channel: 6, 30, ' \
         '12, 0)' in capsys.readouterr().out
  distiller.train()
  frames = distiller.sample(2000)
  assert not (frames[:, ~_known_support()]).any()
  np.testing.assert_array_equal(frames[..., :2].sum(axis=(1, 2)), 1.0)
  assert len(np.unique(frames[..., 0].reshape(2000, -1).argmax(-1))) == 6       # every bottom-row cell
  # The re-initialised generator (from its config) keeps the support.
  assert int(distiller.generation.numpy()) == 1
  np.testing.assert_array_equal(distiller.generator.config['support'], _known_support())


def test_a_convolutional_teacher_has_no_readable_support():
  inputs = tf.keras.Input(SHAPE)
  x = tf.keras.layers.Conv2D(4, 3)(inputs)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x)))
  teacher = teacher_loading.load_teacher(model, FRAME_SPEC, ACTION_SPEC)
  with pytest.raises(errors.ConfigError, match=r"its input support cannot be read .* Set StructuredGenerator.support = None"):
    teacher_support.teacher_input_support(teacher, SHAPE)
  with pytest.raises(errors.ConfigError, match=r"StructuredGenerator.support='everywhere' is unknown"):
    generators.StructuredGenerator(FRAME_SPEC, support='everywhere')


def test_cell_affinity_is_the_cosine_of_first_layer_rows():
  rng = np.random.default_rng(2)
  kernels = [rng.normal(size=(144, 16)), rng.normal(size=(144, 8))]
  rows = np.concatenate(kernels, axis=1).reshape(36, 4, 24)
  source, target = rows[:, 1], rows[:, 2]
  expected = (source @ target.T) / np.outer(np.linalg.norm(source, axis=1), np.linalg.norm(target, axis=1))
  np.testing.assert_allclose(teacher_support.cell_affinity(kernels, SHAPE, 1, 2), expected, rtol=1e-10)


def test_a_paired_channel_draws_its_cell_given_its_sources():
  # An affinity of 1 between a cell and itself and 0 elsewhere, made sharp: the target lands on the source's cell.
  affinity = np.eye(36, dtype=np.float32)[None]
  generator = generators.StructuredGenerator(FRAME_SPEC, latent_dim=4, hidden_sizes=(8,), one_cell_channels=(0, 1),
                                             paired_channels=((0, 1),), pair_sharpness=30.0, pair_affinity=affinity)
  generator.build_variables()
  frames = generator(generator.sample_latent(2000, tf.random.Generator.from_seed(0))).numpy()
  same = frames[..., 0].reshape(2000, -1).argmax(-1) == frames[..., 1].reshape(2000, -1).argmax(-1)
  assert same.mean() > 0.99
  assert len(np.unique(frames[..., 0].reshape(2000, -1).argmax(-1))) == 36   # the source is still uniform
  # Without the sharpness the two are independent (1/36 equal by chance).
  independent = generators.StructuredGenerator(FRAME_SPEC, latent_dim=4, hidden_sizes=(8,), one_cell_channels=(0, 1),
                                               paired_channels=((0, 1),), pair_sharpness=0.0, pair_affinity=affinity)
  independent.build_variables()
  frames = independent(independent.sample_latent(2000, tf.random.Generator.from_seed(0))).numpy()
  assert (frames[..., 0].reshape(2000, -1).argmax(-1) == frames[..., 1].reshape(2000, -1).argmax(-1)).mean() < 0.08
  for pairs in (((0, 2),), ((0, 1), (1, 0)), ((0, 0),)):
    with pytest.raises(errors.ConfigError, match='paired_channels=.* must be \\(source, target\\) pairs'):
      generators.StructuredGenerator(FRAME_SPEC, one_cell_channels=(0, 1), paired_channels=pairs)


def test_the_distiller_reads_the_pairs_affinity_from_the_teacher(trained_teacher, capsys):
  student = actor_critic.ActorCriticNetwork(FRAME_SPEC, ACTION_SPEC, torso_fn=lambda: torsos.MLPTorso(layer_sizes=(16,)))
  student.create_variables()
  generator_fn = lambda spec: generators.StructuredGenerator(spec, latent_dim=4, hidden_sizes=(8,),  # noqa: E731
                                                             one_cell_channels=(0, 1), support='teacher',
                                                             paired_channels=((0, 1),))
  distiller = distiller_lib.DataFreeDistiller(trained_teacher, student, FRAME_SPEC, ACTION_SPEC,
                                              generator_fn=generator_fn, num_steps=2, batch_size=16,
                                              activation_weight=0.0)
  assert "Generator pairs ((0, 1),): cells drawn by the similarity" in capsys.readouterr().out
  teacher = teacher_loading.load_teacher(trained_teacher, FRAME_SPEC, ACTION_SPEC)
  np.testing.assert_allclose(distiller.generator.config['pair_affinity'],
                             teacher_support.teacher_cell_affinities(teacher, SHAPE, ((0, 1),)), rtol=1e-6)
  distiller.train()
  assert not distiller.sample(256)[:, ~_known_support()].any()


def test_a_keras_model_file_gives_its_weights_and_its_support(tmp_path):
  # A Keras MLP trained with model.fit and saved as a .keras file, loaded as users load one.
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.Input(SHAPE), tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(128, activation='relu'), tf.keras.layers.Dense(3)])
  model.compile(tf.keras.optimizers.Adam(1e-2), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  frames = _frames(np.random.default_rng(3), 64 * 300)
  model.fit(frames, _rule_labels(frames), batch_size=64, epochs=1, verbose=0)
  model.save(tmp_path / 'teacher.keras')
  teacher = teacher_loading.load_teacher(str(tmp_path / 'teacher.keras'), FRAME_SPEC, ACTION_SPEC)
  assert [w.shape for w in teacher.weights] == [w.shape for w in model.weights]
  np.testing.assert_array_equal(teacher.weights[0].numpy(), model.weights[0].numpy())
  np.testing.assert_array_equal(teacher_support.teacher_input_support(teacher, SHAPE), _known_support())


def test_a_layer_as_wide_as_the_observation_is_refused_not_guessed():
  rng = np.random.default_rng(4)
  first, second = rng.normal(size=(144, 144)), rng.normal(size=(144, 3))   # 144 hidden units = 144 inputs
  with pytest.raises(errors.ConfigError, match='a dense layer of 144 units, as many as the observation'):
    teacher_support.first_layer_kernels([first, second], 144)
  assert len(teacher_support.first_layer_kernels([rng.normal(size=(144, 32)), rng.normal(size=(32, 3))], 144)) == 1


def test_a_generator_that_needs_the_teacher_refuses_to_sample_without_it():
  rng = tf.random.Generator.from_seed(0)
  for config in (dict(support='teacher'), dict(paired_channels=((0, 1),))):
    generator = generators.StructuredGenerator(FRAME_SPEC, latent_dim=4, hidden_sizes=(8,), one_cell_channels=(0, 1),
                                               **config)
    assert generator.needs_teacher
    with pytest.raises(errors.ConfigError, match='needs the teacher\'s first layer: build it through DataFreeDistiller'):
      generator(generator.sample_latent(4, rng))
  resolved = generators.StructuredGenerator(FRAME_SPEC, latent_dim=4, hidden_sizes=(8,), one_cell_channels=(0, 1),
                                            support=_known_support())
  assert not resolved.needs_teacher
  assert not resolved(resolved.sample_latent(64, rng)).numpy()[:, ~_known_support()].any()
