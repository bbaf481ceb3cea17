r"""What a recurrent teacher's memory costs: recorded by the actor, or rebuilt by a burn-in.

  python binaries/teacher_memory_bench_main.py --teacher=<PolicySaver export of a recurrent policy>

A recurrent teacher must start each training batch from the state it had at the batch's first step.
Two ways give it: the actor steps the teacher beside its policy and records its state (what Protégé
does, `kickstarting.actor_teachers`), or the learner rebuilds it by unrolling the teacher over the K
steps before the batch (a burn-in, as R2D2 does for its own network), which needs those K observations
stored with every item. This measures, on CartPole-v1 with a random student:

* the actor's env steps/s without a teacher and with the teacher's state recorded (median of repeats);
* a burn-in's error: the teacher's logits after a K-step burn-in from its initial state against its logits
  with its true state, for K in --burn_in (max |Δlogit| and how often its greedy action differs), over
  batches whose episodes began before the batch;
* the learner's cost of a K-step burn-in: one teacher unroll over T + K steps against T.

Without --teacher, a freshly initialised LSTM policy is exported and used.
"""

import os
import statistics
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

from protege.agents.distillation import kickstarting  # noqa: E402
from protege.agents.distillation import teacher_set as teacher_set_lib  # noqa: E402
from protege.agents.training import actor as actor_lib  # noqa: E402
from protege.agents.training import components  # noqa: E402
from protege.agents.training import policy_export  # noqa: E402
from protege.envs import suite  # noqa: E402
from protege.networks import actor_critic  # noqa: E402
from protege.networks import torsos  # noqa: E402
from protege.replay import local_queue  # noqa: E402
from protege.replay import signatures  # noqa: E402

flags.DEFINE_string('teacher', None, 'PolicySaver export of a recurrent CartPole policy (default: a fresh LSTM).')
flags.DEFINE_integer('num_envs', 8, 'Environments of the actor.')
flags.DEFINE_integer('sequence_length', 32, 'T, the steps of an item.')
flags.DEFINE_integer('items', 40, 'Items collected per measurement.')
flags.DEFINE_integer('repeats', 3, 'Repeats of each throughput measurement (the median is reported).')
flags.DEFINE_list('burn_in', ['0', '8', '32', '128'], 'Burn-in lengths K to measure.')
FLAGS = flags.FLAGS


def _collect(observation_spec, action_spec, actor_teachers, items):
  """Runs an actor with a random MLP student for `items` items; returns (env steps/s, batches)."""
  env = suite.make_environment('CartPole-v1', FLAGS.num_envs, seed=1)
  student = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((64, 64)))
  student.create_variables()
  spec = actor_lib.step_spec(observation_spec, action_spec, student, teachers=actor_teachers)
  queue = local_queue.TrajectoryQueue(signatures.sequence_signature(spec, FLAGS.sequence_length, FLAGS.num_envs),
                                      capacity=items + 1)
  writer = local_queue.SequenceWriter(queue, FLAGS.sequence_length)
  actor = actor_lib.Actor(env, student, writer, seed=1, teachers=actor_teachers)
  actor.run(FLAGS.sequence_length + 1)  # the first item; compiles the steps
  start, steps = time.perf_counter(), actor.env_steps
  actor.run((items - 1) * FLAGS.sequence_length)
  rate = (actor.env_steps - steps) / (time.perf_counter() - start)
  writer.flush()
  iterator = iter(queue.dataset(items_per_batch=1))
  batches = [next(iterator) for _ in range(items)]
  queue.close()
  env.close()
  return rate, batches


def main(argv):
  del argv
  env = suite.make_environment('CartPole-v1', 1, seed=0)
  observation_spec, action_spec = components.environment_specs(env)
  env.close()
  with tempfile.TemporaryDirectory() as tmp:
    path = FLAGS.teacher
    if path is None:
      net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((64,)),
                                            core='lstm', core_size=64)
      net.create_variables()
      path = policy_export.export_policy(net, ts.time_step_spec(observation_spec), action_spec, os.path.join(tmp, 'lstm'))
    teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, paths=[path])
    teacher = teacher_set.teachers[0]
    if not teacher.is_recurrent:
      raise app.UsageError(f'--teacher={path!r} is feed-forward; pass a recurrent policy.')
    kickstarter = kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set)
    recorded = kickstarting.actor_teachers(observation_spec, action_spec, kickstarter=kickstarter)

    rates = {'no teacher': [], 'teacher state recorded': []}
    batches = None
    for _ in range(FLAGS.repeats):
      rates['no teacher'].append(_collect(observation_spec, action_spec, None, FLAGS.items)[0])
      rate, batches = _collect(observation_spec, action_spec, recorded, FLAGS.items)
      rates['teacher state recorded'].append(rate)
    print(f'Actor, CartPole-v1 × {FLAGS.num_envs}, T = {FLAGS.sequence_length}, {FLAGS.items} items, median of '
          f'{FLAGS.repeats}:')
    base = statistics.median(rates['no teacher'])
    for name, values in rates.items():
      print(f'  {name}: {statistics.median(values):,.0f} env steps/s ({statistics.median(values) / base:.2f}×)')

    # The reference: each column's whole stream from the run's start.
    T = FLAGS.sequence_length
    observation = np.concatenate([b['observation'][:T].numpy() for b in batches])
    step_type = np.concatenate([b['step_type'][:T].numpy() for b in batches])
    unroll = tf.function(teacher.logits_and_value)
    exact, _, _ = unroll(tf.constant(observation), tf.constant(step_type), teacher.get_initial_state(FLAGS.num_envs))
    exact = exact.numpy()
    print('Burn-in of K steps from the initial state, against the recorded state (batches after the first '
          f'{max(int(k) for k in FLAGS.burn_in) // T + 1}; steps of episodes begun before their batch):')
    first = max(int(k) for k in FLAGS.burn_in) // T + 1
    for k in (int(k) for k in FLAGS.burn_in):
      errors, disagree, count = [], 0, 0
      for item in range(first, len(batches)):
        start = item * T
        window = slice(start - k, start + T)
        steps = step_type[window].copy()
        logits, _, _ = unroll(tf.constant(observation[window]), tf.constant(steps),
                              teacher.get_initial_state(FLAGS.num_envs))
        logits = logits.numpy()[k:]
        # Steps whose episode began before the batch: a FIRST step resets both alike.
        started = np.maximum.accumulate(step_type[start:start + T] == ts.StepType.FIRST, axis=0)
        carried = ~started
        difference = np.abs(logits - exact[start:start + T]).max(axis=-1)[carried]
        errors.extend(difference.tolist())
        disagree += int((logits.argmax(-1) != exact[start:start + T].argmax(-1))[carried].sum())
        count += int(carried.sum())
      print(f'  K = {k:4d}: max |Δlogit| {max(errors):.3g}, median {np.median(errors):.3g}; greedy action differs '
            f'on {100 * disagree / max(count, 1):.1f}% of {count} steps')

    print(f'Learner: one teacher unroll over {FLAGS.num_envs} columns, median of 20 calls:')
    for k in (int(k) for k in FLAGS.burn_in):
      window = tf.constant(observation[:T + k]), tf.constant(step_type[:T + k])
      unroll(*window, teacher.get_initial_state(FLAGS.num_envs))  # compile
      times = []
      for _ in range(20):
        start = time.perf_counter()
        unroll(*window, teacher.get_initial_state(FLAGS.num_envs))[0].numpy()
        times.append(time.perf_counter() - start)
      print(f'  T + K = {T + k:4d} steps: {1e3 * statistics.median(times):.2f} ms')


if __name__ == '__main__':
  app.run(main)
