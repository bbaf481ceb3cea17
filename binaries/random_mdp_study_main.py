r"""The random-MDP study of "Distilling Policy Distillation" (Czarnecki et al., AISTATS 2019, 1902.02186).

  python binaries/random_mdp_study_main.py --output_dir=runs/random_mdp_study   # the full study, ~7.5 min
  python binaries/random_mdp_study_main.py --output_dir=/tmp/s --tiny             # ~30 s, for tests
  python binaries/random_mdp_study_main.py --output_dir=/tmp/s --parts=sampling --num_mdps=200

Every distillation variant of `agents/distillation/variants.py` trains a tabular student on every one of M
random grid worlds (`envs/random_mdp.py`) at once, with exact returns, values and state visitation. Three
parts (`--parts`): `sampling` (every variant at its own learning rate, then teacher- against student-driven
sampling at common rates), `actions` (entropy_regularised against expected_entropy_regularised as the
action count grows) and `noisy` (a teacher that errs in 25% of the states).

Outputs in `--output_dir`: `study.md` (tables), `study.json` (configuration, per-variant summaries and
median/quartile learning curves; a step count of null means never reached), and the plots
`sampling_curves.png`, `common_rates.png`, `action_sweep.png`, `noisy_teacher.png`. The console shows the part, each finished
run, the elapsed time and an ETA.

This binary parses the flags into a `StudyConfig` and calls the library: the study's parts and outputs are
`studies/random_mdp_study.py`; the trainer, and what was taken from the paper and what we had to choose,
`studies/training.py` (every flag is a field of `StudyConfig` of the same name); the tables and
figures `studies/random_mdp_report.py`.
"""

import os
import sys
from typing import Dict, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from protege.agents.distillation import losses as distillation_losses  # noqa: E402
from protege.envs import random_mdp  # noqa: E402
from protege.runtime import errors  # noqa: E402
from protege.studies import random_mdp_study  # noqa: E402
from protege.studies import random_mdp_training as training  # noqa: E402

flags.DEFINE_string('output_dir', None, 'Where study.md, study.json and the PNG plots are written.')
flags.DEFINE_list('parts', list(training.PARTS), f'Parts to run, from {training.PARTS}.')
flags.DEFINE_integer('num_mdps', 1000, 'M, random MDPs of the sampling and noisy-teacher parts.')
flags.DEFINE_integer('sweep_num_mdps', 100, 'MDPs of the action-count sweep (its first M of the same draw).')
flags.DEFINE_integer('grid_size', 20, 'Grids are grid_size x grid_size.')
flags.DEFINE_float('wall_probability', 0.1, 'Probability that a cell is a wall.')
flags.DEFINE_float('reward_probability', 0.01, 'Probability that a non-wall cell is a +10 terminal state.')
flags.DEFINE_float('transition_noise', 0.1, 'η: probability that a move goes in a random direction.')
flags.DEFINE_float('teacher_epsilon', 0.1, 'ε of the ε-greedy teacher; 0 is the greedy teacher (ties shared), '
                   'which only the variants without log π terms can learn from (e.g. --parts=sampling '
                   '--sampling_variants=teacher_distill,on_policy_distill).')
flags.DEFINE_float('noisy_fraction', 0.25, 'Fraction of states where the noisy teacher moves wrongly.')
flags.DEFINE_integer('updates', 150, 'Updates per run (each of unroll_length x envs_per_mdp steps per MDP).')
flags.DEFINE_integer('noisy_updates', 200, 'Updates per run of the noisy-teacher part.')
flags.DEFINE_integer('sweep_updates', 100, 'Updates per run of the action-count sweep.')
flags.DEFINE_integer('unroll_length', 20, 'T, steps per environment per update.')
flags.DEFINE_integer('envs_per_mdp', 4, 'B, environments per MDP.')
flags.DEFINE_float('eval_growth', 1.25, 'Students are evaluated exactly after update 0, 1, 2, ... spaced '
                   'geometrically by this factor (at least 1 update apart), and after the last.')
flags.DEFINE_integer('critic_refresh_every', 5, 'Updates between refreshes of the exact student values '
                     '(value_gated only).')
flags.DEFINE_list('action_counts', ['4', '10', '100', '1000'], 'Action counts of the sweep.')
flags.DEFINE_multi_string('learning_rates', [], 'Per-variant learning rates, e.g. entropy_regularised=0.3 '
                          f'(defaults: {training.DEFAULT_LEARNING_RATES}).')
flags.DEFINE_list('common_rates', ['1', '3', '10'], 'Learning rates at which teacher_distill and '
                  'on_policy_distill are also compared (same rate for both).')
flags.DEFINE_integer('common_rate_updates', 40, 'Updates per run of that comparison.')
flags.DEFINE_multi_string('sweep_learning_rates', [], 'Learning rates of the action-count sweep per variant '
                          'and count, e.g. entropy_regularised@1000=0.1 (defaults: '
                          f'{training.DEFAULT_SWEEP_LEARNING_RATES}).')
flags.DEFINE_float('reward_coef', 0.1, 'β, the weight of the environment reward (+10) in the variants that '
                   'use one.')
flags.DEFINE_bool('baseline', False, 'Subtract a learned per-state baseline b(s) from the pseudo-returns R̂ '
                  '(a variance-reduction variant of eq. 1; its expected update is unchanged). Off by '
                  'default: the paper\'s eq. 1 and distillation_surrogate have none.')
flags.DEFINE_enum('advantage_normalization', 'none', training.ADVANTAGE_NORMALIZATIONS,
                  "What happens to the score-function term's returns before the update: 'none' (eq. 1), "
                  "'joint' (standardised per MDP, as PPO's per-minibatch normalisation of env + pseudo "
                  "advantages) or 'separate' (only the environment reward's part standardised, the "
                  "teacher-derived part added at its own scale).")
flags.DEFINE_float('baseline_rate', 0.5, 'Step size of the baseline towards the batch mean of R̂ in each '
                   'visited state.')
flags.DEFINE_float('reach_fraction', 0.95, 'The student reaches the teacher when its return is at least this '
                   'fraction of the teacher\'s.')
flags.DEFINE_integer('seed', 0, 'Seed of the MDPs and of the training randomness.')
flags.DEFINE_list('sampling_variants', list(training.SAMPLING_VARIANTS), 'The variants the sampling part trains '
                  'at their own learning rates (the common-rate comparison always trains teacher_distill and '
                  'on_policy_distill).')
flags.DEFINE_integer('student_view', 0, 'What the students see: 0, the cell index (tabular, fully '
                     'observable); an odd k, only the k x k square around the agent (walls, rewards; off the '
                     'grid reads as wall), the paper\'s partially observable setting: cells with the same view '
                     'share the student\'s logits. The teachers always act on the full state.')
flags.DEFINE_bool('tiny', False, 'A small study (60 MDPs of 8 x 8, short runs, actions 4 and 100) that runs '
                  'in seconds, for tests; explicit flags are overridden.')
flags.DEFINE_bool('plots', True, 'Write the PNG plots.')
FLAGS = flags.FLAGS


def _parse_learning_rates(entries: Sequence[str], defaults: Dict[str, float], flag: str,
                          example: str) -> Dict[str, float]:
  """`name=rate` entries over `defaults`; the name is a variant, optionally `@count` for the sweep."""
  rates = dict(defaults)
  for entry in entries:
    name, _, value = entry.partition('=')
    name = name.strip()
    variant, _, count = name.partition('@')
    if variant not in distillation_losses.VARIANTS:
      raise app.UsageError(f'--{flag} entry {entry!r} names no variant; use one of '
                           f'{", ".join(distillation_losses.VARIANTS)}.')
    try:
      rates[name] = float(value)
      if count:
        int(count)
    except ValueError:
      raise app.UsageError(f'--{flag} entry {entry!r} is not of the form {example}.') from None
  return rates


def config_from_flags() -> training.StudyConfig:
  """The flags as a `StudyConfig` (`--tiny` overrides the sizes); a bad value is a UsageError."""
  unknown = [p for p in FLAGS.parts if p not in training.PARTS]
  if unknown:
    raise app.UsageError(f'Unknown part(s) {unknown}; choose from {training.PARTS}.')
  values = dict(
      parts=tuple(FLAGS.parts), num_mdps=FLAGS.num_mdps, sweep_num_mdps=FLAGS.sweep_num_mdps,
      grid_size=FLAGS.grid_size, wall_probability=FLAGS.wall_probability,
      reward_probability=FLAGS.reward_probability, transition_noise=FLAGS.transition_noise,
      teacher_epsilon=FLAGS.teacher_epsilon, noisy_fraction=FLAGS.noisy_fraction, updates=FLAGS.updates,
      noisy_updates=FLAGS.noisy_updates, sweep_updates=FLAGS.sweep_updates, unroll_length=FLAGS.unroll_length,
      envs_per_mdp=FLAGS.envs_per_mdp,
      eval_growth=FLAGS.eval_growth, critic_refresh_every=FLAGS.critic_refresh_every,
      action_counts=tuple(int(a) for a in FLAGS.action_counts),
      learning_rates=_parse_learning_rates(FLAGS.learning_rates, training.DEFAULT_LEARNING_RATES, 'learning_rates',
                                           'entropy_regularised=0.3'),
      sweep_learning_rates=_parse_learning_rates(FLAGS.sweep_learning_rates, training.DEFAULT_SWEEP_LEARNING_RATES,
                                                 'sweep_learning_rates', 'entropy_regularised@1000=0.1'),
      common_rates=tuple(float(r) for r in FLAGS.common_rates), common_rate_updates=FLAGS.common_rate_updates,
      reward_coef=FLAGS.reward_coef,
      baseline=FLAGS.baseline, advantage_normalization=FLAGS.advantage_normalization,
      baseline_rate=FLAGS.baseline_rate,
      reach_fraction=FLAGS.reach_fraction, seed=FLAGS.seed,
      sampling_variants=tuple(FLAGS.sampling_variants), student_view=FLAGS.student_view)
  if FLAGS.tiny:
    values.update(training.TINY)
  if min(values['action_counts']) < random_mdp.NUM_MOVES:
    raise app.UsageError(f'--action_counts must all be >= 4, got {values["action_counts"]}.')
  try:
    return training.StudyConfig(**values)
  except errors.ConfigError as error:
    raise app.UsageError(str(error)) from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.output_dir:
    raise app.UsageError('--output_dir is required.')
  random_mdp_study.run_study(config_from_flags(), FLAGS.output_dir, plots=FLAGS.plots)


def run():
  """The `protege-random-mdp-study` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
