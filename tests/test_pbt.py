"""Population based training: selection and explore rules, the scheduler's decisions, lineage, atomic
checkpoints, and a member's hyperparameters after a restore (no Ray cluster: Ray's scheduler is driven with
stand-in trials, and a member is built in this process)."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
from ray.tune.experiment import Trial
from scipy import stats
import tensorflow as tf

from protege.agents.distillation import schedules
from protege.pbt import lineage as lineage_lib
from protege.pbt import member as member_lib
from protege.pbt import scheduler as scheduler_lib
from protege.runtime import errors
from protege.runtime import run_directory

SPACE = {'learning_rate': (1e-4, 1e-2, 'log'), 'entropy_coef': (1e-4, 1e-2, 'log'),
         'lambda_teacher_0': (0.0, 4.0, 'linear')}


# --- pure rules ---------------------------------------------------------------------------------------


def test_welch_t_test_by_hand_and_against_scipy():
  # a = [1, 2, 3], b = [4, 5, 6]: means 2 and 5, variances 1 and 1, so t = −3 / √(1/3 + 1/3) = −3.674 and
  # ν = (2/3)² / ((1/3)²/2 + (1/3)²/2) = 4.
  t, p = scheduler_lib.welch_t_test([1, 2, 3], [4, 5, 6])
  assert t == pytest.approx(-3.0 / math.sqrt(2.0 / 3.0))
  assert p == pytest.approx(2 * stats.t.sf(3.0 / math.sqrt(2.0 / 3.0), 4))
  rng = np.random.default_rng(0)
  a, b = rng.normal(10, 3, size=7), rng.normal(12, 1, size=12)
  expected = stats.ttest_ind(a, b, equal_var=False)
  assert scheduler_lib.welch_t_test(a, b) == pytest.approx((expected.statistic, expected.pvalue))
  # Both variances 0: the difference is certain (scipy gives inf or nan here).
  assert scheduler_lib.welch_t_test([500, 500], [200, 200]) == (math.inf, 0.0)
  assert scheduler_lib.welch_t_test([500, 500], [500, 500]) == (0.0, 1.0)
  with pytest.raises(ValueError, match='at least 2'):
    scheduler_lib.welch_t_test([1], [1, 2])


def test_t_test_selection_on_synthetic_returns():
  rng = np.random.default_rng(1)
  poor, good = rng.normal(100, 10, size=10), rng.normal(200, 10, size=10)
  comparison = scheduler_lib.compare_returns(poor, good)
  assert comparison.exploit and comparison.p_value < 1e-6
  assert comparison.peer_mean == pytest.approx(good.mean())
  assert comparison.own_mean == pytest.approx(poor.mean())
  # A better peer is not copied: the test is about the peer being better.
  assert not scheduler_lib.compare_returns(good, poor).exploit
  # Higher but not significantly: noisy returns a little apart.
  noisy_low, noisy_high = rng.normal(100, 50, size=10), rng.normal(110, 50, size=10)
  comparison = scheduler_lib.compare_returns(noisy_low, noisy_high)
  assert comparison.p_value > 0.05 and not comparison.exploit
  # The significance level decides: the same returns copy at level 1.
  assert scheduler_lib.compare_returns(noisy_low, noisy_high, significance=1.0).exploit == (
      noisy_high.mean() > noisy_low.mean())
  # Only the last `episodes_window` returns count: old bad episodes are forgotten.
  recovered = np.concatenate([np.full(30, 10.0), rng.normal(200, 10, size=10)])
  assert not scheduler_lib.compare_returns(recovered, good, episodes_window=10).exploit
  # Too few episodes on either side: no decision.
  assert scheduler_lib.compare_returns([1.0, 2.0], good, min_episodes=3) is None
  assert scheduler_lib.compare_returns(poor, [], min_episodes=2) is None


def test_search_space_keys_ranges_and_errors():
  space = scheduler_lib.search_space(teacher_names=('a', 'b'), teacher_weights={'b': (0.5, 1.0)})
  assert list(space) == ['learning_rate', 'entropy_coef', 'lambda_a', 'lambda_b']
  assert space['learning_rate'] == scheduler_lib.Hyperparameter(1e-4, 3e-3, True)
  assert space['lambda_a'] == scheduler_lib.Hyperparameter(0.0, 4.0, False)
  assert space['lambda_b'] == scheduler_lib.Hyperparameter(0.5, 1.0, False)
  factorised = scheduler_lib.search_space(teacher_names=('a', 'b'), factorised=True, entropy_coef=None,
                                          others={'intrinsic_advantage_coef': (0.5, 2.0, 'log')})
  assert list(factorised) == ['learning_rate', 'lambda_scale', 'lambda_a', 'lambda_b',
                              'intrinsic_advantage_coef']
  assert scheduler_lib.search_space(teacher_names=('a',), teacher_weight=None).keys() == {'learning_rate',
                                                                                          'entropy_coef'}
  with pytest.raises(ValueError, match="needs low > 0; use 'linear'"):
    scheduler_lib.search_space(learning_rate=(0.0, 1e-3, 'log'))
  with pytest.raises(ValueError, match='unknown teachers'):
    scheduler_lib.search_space(teacher_names=('a',), teacher_weights={'z': (0, 1)})
  with pytest.raises(ValueError, match='must be >= 0'):
    scheduler_lib.search_space(teacher_names=('a',), teacher_weight=(-1.0, 1.0))
  with pytest.raises(ValueError, match='is empty'):
    scheduler_lib.search_space(learning_rate=None, entropy_coef=None)


# --- the scheduler, driven with stand-in trials ------------------------------------------------------


class FakeTrial:
  """What Ray's PBT reads and writes of a trial."""

  def __init__(self, index, hyperparameters):
    self.trial_id = f'trial_{index}'
    self.config = {scheduler_lib.MEMBER_KEY: {'index': index, 'root_dir': f'/runs/{index}'},
                   **hyperparameters}
    self.experiment_tag = str(index)
    self.evaluated_params = {}
    self.status = Trial.RUNNING
    self.temporary_state = types.SimpleNamespace(saving_to=None)
    self.run_metadata = types.SimpleNamespace(checkpoint_manager=types.SimpleNamespace(
        checkpoint_config=types.SimpleNamespace(num_to_keep=None), _latest_checkpoint_result=None))

  def is_finished(self):
    return self.status in (Trial.TERMINATED, Trial.ERROR)

  def set_experiment_tag(self, tag):
    self.experiment_tag = tag

  def set_config(self, config):
    self.config = config


class FakeController:
  """What Ray's PBT calls on the Tune controller: saves are recorded, pauses set the trial PAUSED."""

  search_alg = None

  def __init__(self, trials):
    self.trials, self.saved, self.paused = trials, [], []

  def get_trials(self):
    return self.trials

  def _schedule_trial_save(self, trial, result=None):
    del result
    self.saved.append(trial.trial_id)
    return f'checkpoint of {trial.trial_id}'

  def pause_trial(self, trial, should_checkpoint=True):
    assert not should_checkpoint
    self.paused.append(trial.trial_id)
    trial.status = Trial.PAUSED


def _population(tmp_path, scores_and_returns, selection='t_test', **scheduler_args):
  lineage = lineage_lib.LineageLog(str(tmp_path / 'lineage.jsonl'))
  scheduler = scheduler_lib.PBTScheduler(space=SPACE, lineage=lineage, ready_env_steps=100,
                                         selection=selection, seed=0, **scheduler_args)
  trials = [FakeTrial(i, {'learning_rate': 1e-3 * (i + 1), 'entropy_coef': 1e-3, 'lambda_teacher_0': 1.0 + i})
            for i in range(len(scores_and_returns))]
  controller = FakeController(trials)
  for trial in trials:
    scheduler.on_trial_add(controller, trial)
  return scheduler, controller, trials, lineage


def _report(scheduler, controller, trial, returns, env_steps=100):
  return scheduler.on_trial_result(controller, trial, {
      'env_steps': env_steps, 'episode_return_mean': float(np.mean(returns)),
      'recent_returns': list(returns)})


def test_t_test_exploit_copies_a_significantly_better_peer_and_explores(tmp_path):
  rng = np.random.default_rng(0)
  good, poor = rng.normal(200, 5, size=10).tolist(), rng.normal(50, 5, size=10).tolist()
  scheduler, controller, (weak, strong), lineage = _population(tmp_path, [0, 0], resample_probability=0.0)
  search = scheduler_lib.PopulationSearch(scheduler)
  search.is_finished = types.MethodType(lambda self: (not self._scheduler.restarting), search)  # no generator

  # The strong member is ready first: no peer has returns yet, so it saves (and can be copied).
  assert _report(scheduler, controller, strong, good) == 'CONTINUE'
  assert controller.saved == [strong.trial_id] and not controller.paused
  # The weak one is ready: its random peer is significantly better, so it copies it.
  _report(scheduler, controller, weak, poor)
  assert controller.paused == [weak.trial_id]
  copied = weak.run_metadata.checkpoint_manager._latest_checkpoint_result.checkpoint
  assert copied == f'checkpoint of {strong.trial_id}'
  # The donor's hyperparameters, each ×0.8 or ×1.2 (no resampling), the member's own settings kept.
  for name in SPACE:
    ratio = weak.config[name] / strong.config[name]
    assert ratio == pytest.approx(0.8) or ratio == pytest.approx(1.2), (name, ratio)
  assert weak.config[scheduler_lib.MEMBER_KEY] == {'index': 0, 'root_dir': '/runs/0'}
  # Until it reports again Ray is told more may come, so that it keeps the member's process for it.
  assert scheduler.restarting and not search.is_finished()
  weak.status = Trial.RUNNING
  _report(scheduler, controller, weak, good, env_steps=200)  # it reports again (with the copied weights)
  assert not scheduler.restarting and controller.paused == [weak.trial_id]

  events = lineage.events()
  kinds = [e['event'] for e in events]
  assert kinds[:5] == ['report', 'report', 'compare', 'exploit', 'explore']
  exploit, explore = events[3], events[4]
  assert exploit['member'] == 'member_0' and exploit['donor'] == 'member_1'
  assert exploit['selection'] == 't_test' and exploit['p_value'] < 1e-6
  assert explore['env_steps'] == 100 and set(explore['operations'].values()) <= {'* 0.8', '* 1.2'}
  assert explore['old'] == {k: strong.config[k] for k in SPACE}


def test_t_test_keeps_training_when_the_peer_is_not_significantly_better(tmp_path):
  rng = np.random.default_rng(2)
  scheduler, controller, (first, second), lineage = _population(tmp_path, [0, 0])
  _report(scheduler, controller, second, rng.normal(100, 40, size=10))
  _report(scheduler, controller, first, rng.normal(95, 40, size=10))
  assert not controller.paused and controller.saved == [second.trial_id, first.trial_id]
  compare = [e for e in lineage.events() if e['event'] == 'compare']
  assert len(compare) == 1 and not compare[0]['exploit'] and compare[0]['p_value'] > 0.05


def test_truncation_selection_bottom_copies_top(tmp_path):
  scheduler, controller, trials, lineage = _population(tmp_path, [0] * 4, selection='truncation',
                                                       truncation_fraction=0.25)
  best, middle_high, middle_low, worst = trials[3], trials[2], trials[1], trials[0]
  order = ((best, 400.0), (middle_high, 300.0), (middle_low, 200.0), (worst, 100.0))
  # First round: Ray ranks the members that have scores so far, so each newcomer is the bottom one.
  for trial, mean in order:
    _report(scheduler, controller, trial, [mean, mean + 1, mean - 1])
  assert controller.saved == [best.trial_id] and len(controller.paused) == 3
  # Second round, everyone ranked: members that do not copy save; the bottom quarter copies the top one.
  controller.saved, controller.paused = [], []
  for trial in trials:
    trial.status = Trial.RUNNING
  for trial, mean in order:
    _report(scheduler, controller, trial, [mean, mean + 1, mean - 1], env_steps=200)
  assert controller.saved == [best.trial_id, middle_high.trial_id, middle_low.trial_id]
  assert controller.paused == [worst.trial_id]
  exploit = [e for e in lineage.events() if e['event'] == 'exploit'][-1]
  assert exploit['member'] == 'member_0' and exploit['donor'] == 'member_3'
  assert exploit['selection'] == 'truncation' and exploit['p_value'] is None
  assert not [e for e in lineage.events() if e['event'] == 'compare']


def _space():
  return {name: scheduler_lib.hyperparameter(name, spec) for name, spec in SPACE.items()}


def test_explore_perturbs_by_factors_with_seeded_draws_and_clips(tmp_path):
  scheduler, _, (member, donor), _ = _population(tmp_path, [0, 0], resample_probability=0.0)
  donor.config.update(learning_rate=9e-3, entropy_coef=1e-3, lambda_teacher_0=1.0)
  random.seed(7)
  new_config, operations = scheduler._get_new_config(member, donor)
  # Ray's explore draws, per hyperparameter in order, random() (resample?) then choice(factors).
  replay = random.Random(7)
  for name in SPACE:
    replay.random()
    factor = replay.choice((0.8, 1.2))
    assert operations[name] == f'* {factor}'
    assert new_config[name] == pytest.approx(min(donor.config[name] * factor, _space()[name].high))
  # 9e-3 × 1.2 leaves the range [1e-4, 1e-2]: clipped, and the lineage says so.
  random.seed(7)
  scheduler._explored = {'clipped': []}
  clipped_config = scheduler._clip({**donor.config, 'learning_rate': 9e-3 * 1.2})
  assert clipped_config['learning_rate'] == 1e-2 and scheduler._explored['clipped'] == ['learning_rate']


def test_explore_resamples_with_probability_one_within_bounds(tmp_path):
  scheduler, _, (member, donor), _ = _population(tmp_path, [0, 0], resample_probability=1.0)
  np.random.seed(3)
  random.seed(3)
  values = []
  for _ in range(20):
    new_config, operations = scheduler._get_new_config(member, donor)
    assert set(operations.values()) == {'resample'}
    for name, hyper in _space().items():
      assert hyper.low <= new_config[name] <= hyper.high
    values.append(new_config['lambda_teacher_0'])
  assert len(set(values)) == 20  # fresh draws, not ×0.8/×1.2 of the donor
  # Seeded: the same seeds give the same draws.
  np.random.seed(3)
  random.seed(3)
  assert scheduler._get_new_config(member, donor)[0]['lambda_teacher_0'] == values[0]


def test_scheduler_rejects_bad_settings():
  with pytest.raises(ValueError, match="'t_test' or 'truncation'"):
    scheduler_lib.PBTScheduler(space=SPACE, ready_env_steps=10, selection='tournament')
  with pytest.raises(ValueError, match='ready_env_steps'):
    scheduler_lib.PBTScheduler(space=SPACE, ready_env_steps=0)


# --- lineage ---------------------------------------------------------------------------------------------


def _lineage_events(path):
  log = lineage_lib.LineageLog(path)
  for steps in (100, 200):
    for index, score in ((0, 10.0 + steps / 10), (1, 50.0 + steps / 10)):
      log.record('report', member=f'member_{index}', env_steps=steps, score=score,
                 hyperparameters={'learning_rate': 1e-3 * (index + 1), 'lambda_teacher_0': 1.0 + index})
  log.record('exploit', member='member_0', donor='member_1', env_steps=200, donor_env_steps=200, score=30.0,
             donor_score=70.0, selection='t_test', p_value=0.01)
  log.record('explore', member='member_0', donor='member_1', env_steps=200,
             old={'learning_rate': 2e-3, 'lambda_teacher_0': 2.0}, new={'learning_rate': 2.4e-3,
                                                                       'lambda_teacher_0': 1.6},
             operations={'learning_rate': '* 1.2', 'lambda_teacher_0': '* 0.8'}, clipped=[])
  log.record('report', member='member_0', env_steps=300, score=float('nan'),
             hyperparameters={'learning_rate': 2.4e-3, 'lambda_teacher_0': 1.6})
  return log


def test_lineage_log_round_trip_and_trajectories(tmp_path):
  path = str(tmp_path / 'lineage.jsonl')
  log = _lineage_events(path)
  with open(path, 'a') as f:
    f.write('{"event": "report", "member": "mem')  # a line cut short by a crash
  events = lineage_lib.read_events(path)
  assert [e['event'] for e in events] == ['report'] * 4 + ['exploit', 'explore', 'report']
  assert events[-1]['score'] is None  # NaN is written as null (strict JSON)
  json.loads(open(path).readline())
  paths = lineage_lib.trajectories(events)
  assert [p['kind'] for p in paths['member_0']] == ['report', 'report', 'explore', 'report']
  explore = paths['member_0'][2]
  assert explore['donor'] == 'member_1' and explore['score'] == 70.0
  assert explore['hyperparameters'] == {'learning_rate': 2.4e-3, 'lambda_teacher_0': 1.6}
  assert len(log.events()) == 7


def test_lineage_plot_writes_a_png(tmp_path):
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  events = _lineage_events(str(tmp_path / 'lineage.jsonl')).events()
  path = lineage_lib.plot_lineage(events, str(tmp_path / 'plots' / 'lineage.png'))
  pixels = image.imread(path)
  # Three panels (learning_rate, lambda_teacher_0, score) at 2.3 inches each plus a title, 110 dpi.
  assert abs(pixels.shape[0] - (2.3 * 3 + 0.6) * 110) <= 1 and pixels.shape[1] == 990
  assert pixels[..., :3].std() > 0.05  # something is drawn


# --- atomic checkpoints ------------------------------------------------------------------------------------


def _state(value, size=1 << 20):
  return tf.train.Checkpoint(weights=tf.Variable(tf.fill([size], float(value))), step=tf.Variable(int(value)))


def test_checkpoint_round_trip_with_metadata(tmp_path):
  path = member_lib.write_checkpoint(_state(3.0, size=8), str(tmp_path),
                                     metadata={'env_steps': 7, 'x': np.float32(1)})
  assert sorted(os.listdir(tmp_path)) == [member_lib.CHECKPOINT_SUBDIR]  # no staging directory left
  reader = _state(0.0, size=8)
  assert member_lib.read_checkpoint(reader, str(tmp_path)) == {'env_steps': 7, 'x': 1.0}
  assert reader.weights.numpy().tolist() == [3.0] * 8 and int(reader.step.numpy()) == 3
  assert path == os.path.join(str(tmp_path), member_lib.CHECKPOINT_SUBDIR)


def test_a_member_that_saved_restores_a_donor_that_never_did(tmp_path):
  # The Trainer's periodic checkpoint (`Checkpoint.save`, every train.checkpoint_interval_seconds) creates
  # the reader's save_counter; a donor that has not reached that interval yet has none of its own.
  reader = _state(0.0, size=8)
  reader.save(str(tmp_path / 'own' / 'ckpt'))
  member_lib.write_checkpoint(_state(3.0, size=8), str(tmp_path / 'donor'), metadata={'env_steps': 5})
  assert member_lib.read_checkpoint(reader, str(tmp_path / 'donor')) == {'env_steps': 5}
  assert reader.weights.numpy().tolist() == [3.0] * 8
  # And the other way round: a donor that saved, a reader that never did.
  saved = _state(4.0, size=8)
  saved.save(str(tmp_path / 'saved' / 'ckpt'))
  member_lib.write_checkpoint(saved, str(tmp_path / 'donor2'))
  fresh = _state(0.0, size=8)
  member_lib.read_checkpoint(fresh, str(tmp_path / 'donor2'))
  assert fresh.weights.numpy().tolist() == [4.0] * 8


def test_a_diverged_member_is_never_written_nor_read(tmp_path):
  state = _state(1.0, size=8)
  state.weights.assign(tf.tensor_scatter_nd_update(state.weights, [[3]], [np.nan]))
  guard = run_directory.NonFiniteGuard([state.weights])
  with pytest.raises(errors.DivergenceError, match="weight 'Variable:0' holds a NaN or infinity"):
    member_lib.write_checkpoint(state, str(tmp_path / 'written'), guard=guard)
  assert not os.path.exists(tmp_path / 'written' / member_lib.CHECKPOINT_SUBDIR)
  # A NaN that reached a member checkpoint anyway (written without the check) is refused before anything
  # is assigned: the reader keeps its own weights.
  member_lib.write_checkpoint(state, str(tmp_path / 'unchecked'))
  reader = _state(2.0, size=8)
  with pytest.raises(member_lib.CheckpointError, match='holds a NaN in weights'):
    member_lib.read_checkpoint(reader, str(tmp_path / 'unchecked'))
  assert reader.weights.numpy().tolist() == [2.0] * 8


def test_a_checkpoint_replaced_in_place_is_always_whole_to_a_reader(tmp_path):
  """`member/` is replaced in one atomic step: a reader racing the writer of the SAME directory always
  finds a checkpoint there, never none (a two-rename replacement leaves a moment without one), and restores
  a whole version or refuses one whose files it read across a replacement (the manifest check)."""
  directory = str(tmp_path / 'member_checkpoint')
  member_lib.write_checkpoint(_state(0), directory, metadata={'version': 0})
  done = threading.Event()
  outcomes = []

  def write():
    for version in range(1, 9):
      member_lib.write_checkpoint(_state(version), directory, metadata={'version': version})
    done.set()

  writer = threading.Thread(target=write)
  writer.start()
  reader = _state(-1.0)
  while not done.is_set() or len(outcomes) < 20:
    try:
      metadata = member_lib.read_checkpoint(reader, directory)
    except (member_lib.CheckpointError, tf.errors.OpError) as error:
      outcomes.append(('absent',) if 'holds no complete member checkpoint' in str(error) else ('refused',))
      continue
    values = reader.weights.numpy()
    outcomes.append(('whole',) if values.min() == values.max() == metadata['version'] else ('MIXED',))
  writer.join()
  assert ('whole',) in outcomes and ('absent',) not in outcomes and ('MIXED',) not in outcomes, sorted(set(outcomes))
  assert sorted(os.listdir(directory)) == [member_lib.CHECKPOINT_SUBDIR]


def _copy_what_exists(source, destination):
  """Copies a directory tree that is being written: files that vanish or change meanwhile are skipped."""
  for root, _, files in os.walk(source):
    target = os.path.join(destination, os.path.relpath(root, source))
    os.makedirs(target, exist_ok=True)
    for name in files:
      try:
        shutil.copyfile(os.path.join(root, name), os.path.join(target, name))
      except OSError:
        pass


def test_a_reader_never_sees_a_partial_checkpoint(tmp_path):
  """A reader (and a copier, like Ray persisting or an exploit copying) races the writer of fresh checkpoint
  directories: each read either finds no checkpoint yet or restores one whole."""
  versions = list(range(1, 7))
  directories = [str(tmp_path / f'checkpoint_{v}') for v in versions]
  done = threading.Event()
  outcomes, copies = [], []

  def write():
    for version, directory in zip(versions, directories):
      member_lib.write_checkpoint(_state(version), directory, metadata={'version': version})
    done.set()

  def read():
    reader = _state(0.0)
    while not done.is_set() or len(outcomes) < 200:
      for index, directory in enumerate(directories):
        copy = str(tmp_path / f'copy_{len(copies)}')
        if os.path.isdir(directory):
          _copy_what_exists(directory, copy)  # a copy taken mid-write
          copies.append((index, copy))
        try:
          metadata = member_lib.read_checkpoint(reader, directory)
        except member_lib.CheckpointError:
          outcomes.append(('absent', index))
          continue
        values = reader.weights.numpy()
        whole = values.min() == values.max() == versions[index] == metadata['version']
        outcomes.append(('whole' if whole else 'MIXED', index))
      if done.is_set() and len(outcomes) >= 200:
        break

  writer, reader_thread = threading.Thread(target=write), threading.Thread(target=read)
  reader_thread.start()
  writer.start()
  writer.join()
  reader_thread.join()
  assert not [o for o in outcomes if o[0] == 'MIXED']
  assert {index for kind, index in outcomes if kind == 'whole'} == set(range(len(versions)))
  # Every copy, however early it was taken, is either refused or restores one version whole.
  reader = _state(0.0)
  for index, copy in copies[::max(1, len(copies) // 40)]:
    try:
      member_lib.read_checkpoint(reader, copy)
    except member_lib.CheckpointError:
      continue
    assert reader.weights.numpy().min() == reader.weights.numpy().max() == versions[index]


def test_a_damaged_checkpoint_is_refused_before_anything_is_assigned(tmp_path):
  member_lib.write_checkpoint(_state(5.0, size=64), str(tmp_path))
  data = [n for n in os.listdir(tmp_path / member_lib.CHECKPOINT_SUBDIR) if '.data-' in n][0]
  data_path = tmp_path / member_lib.CHECKPOINT_SUBDIR / data
  reader = _state(1.0, size=64)
  content = data_path.read_bytes()
  data_path.write_bytes(content[:len(content) // 2])  # truncated
  with pytest.raises(member_lib.CheckpointError, match='damaged'):
    member_lib.read_checkpoint(reader, str(tmp_path))
  data_path.write_bytes(bytes(len(content)))  # same size, other bytes
  with pytest.raises(member_lib.CheckpointError, match='damaged'):
    member_lib.read_checkpoint(reader, str(tmp_path))
  assert reader.weights.numpy().max() == 1.0
  with pytest.raises(member_lib.CheckpointError, match='no complete member checkpoint'):
    member_lib.read_checkpoint(reader, str(tmp_path / 'nowhere'))


# --- a member in this process ------------------------------------------------------------------------------

TINY_GIN = """
import protege.pbt.scheduler
make_environment.env_id = 'CartPole-v1'
make_environment.num_envs = 2
ActorCriticNetwork.torso_fn = @MLPTorso
MLPTorso.layer_sizes = (16,)
train.total_env_steps = 512
train.sequence_length = 16
train.eval_episodes = 1
train.progress_interval_seconds = 60.0
PPOLearner.num_epochs = 1
PPOLearner.kickstarter_fn = @Kickstarter
TeacherSet.paths = ['{teacher}']
TeacherWeights.mode = 'pbt'
"""


@pytest.fixture(scope='module')
def member_gin(tmp_path_factory):
  directory = tmp_path_factory.mktemp('member')
  teacher = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
  teacher.save(str(directory / 'teacher.keras'))
  path = directory / 'tiny.gin'
  path.write_text(TINY_GIN.format(teacher=directory / 'teacher.keras'))
  return str(path)


def _member_config(member_gin, root_dir, **hyperparameters):
  settings = member_lib.member_settings(0, root_dir, [member_gin], [], ready_env_steps=64, threads=0)
  return {scheduler_lib.MEMBER_KEY: settings, 'learning_rate': 1e-3, 'entropy_coef': 1e-3,
          'lambda_teacher_0': 2.0, **hyperparameters}


def test_member_hyperparameters_win_over_a_restored_checkpoint_without_retracing(member_gin, tmp_path):
  config = _member_config(member_gin, str(tmp_path))
  member = member_lib.Member(config)
  try:
    learner = member.trainer.learner
    assert member.hyperparameters() == pytest.approx({'learning_rate': 1e-3, 'entropy_coef': 1e-3,
                                                      'lambda_teacher_0': 2.0})
    result = member.train()
    assert result['env_steps'] == 64 and result['tracing_count'] == 1
    saved = member.save(str(tmp_path / 'ray_checkpoint'))
    assert os.path.isfile(tmp_path / 'ray_checkpoint' / member_lib.CHECKPOINT_SUBDIR / member_lib.MANIFEST)
    member.train()
    assert member.trainer.env_steps == 128

    # An exploit as Ray runs it with reuse_actors: reset_config(explored), then load_checkpoint(donor's).
    explored = _member_config(member_gin, str(tmp_path), learning_rate=4e-4, entropy_coef=5e-3,
                              lambda_teacher_0=0.5)
    assert member.reset(explored)
    member.restore(saved)
    assert member.trainer.env_steps == 64  # the checkpoint's weights and counters ...
    expected = {'learning_rate': 4e-4, 'entropy_coef': 5e-3, 'lambda_teacher_0': 0.5}
    assert member.hyperparameters() == pytest.approx(expected)  # ... with the new config's values
    assert float(learner.kickstarter.weights.values()[0].numpy()) == pytest.approx(0.5)
    result = member.train()
    assert result['tracing_count'] == 1 and result['hyperparameters'] == pytest.approx(expected)
    assert learner.tracing_count() == 1

    # The other order (a restore, then a new config) ends the same way.
    member.restore(saved)
    assert member.reset(_member_config(member_gin, str(tmp_path), lambda_teacher_0=3.0))
    assert member.hyperparameters()['lambda_teacher_0'] == pytest.approx(3.0)
    member.train()
    assert member.tracing_count == 1
    events = [e['event'] for e in lineage_lib.read_events(os.path.join(member.member_dir, 'events.jsonl'))]
    assert events == ['setup', 'reset', 'restore', 'restore', 'reset']
  finally:
    member.stop()


def test_pbt_moves_each_lambda_of_a_kickstarted_impala_member(tmp_path):
  # The Kickstarting paper's setting: an IMPALA/V-trace learner, two teachers, PBT owning each lambda_k.
  teachers = []
  for k in range(2):
    teacher = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
    teachers.append(str(tmp_path / f'teacher_{k}.keras'))
    teacher.save(teachers[-1])
  gin_path = tmp_path / 'impala.gin'
  gin_path.write_text(TINY_GIN.format(teacher=teachers[0]).replace(
      'PPOLearner.kickstarter_fn = @Kickstarter',
      'train.learner_fn = @IMPALALearner\nIMPALALearner.kickstarter_fn = @Kickstarter') + (
          f"TeacherSet.paths = {teachers!r}\n"))
  config = _member_config(str(gin_path), str(tmp_path / 'run'), lambda_teacher_1=0.25)
  member = member_lib.Member(config)
  try:
    learner = member.trainer.learner
    assert type(learner).__name__ == 'IMPALALearner'
    assert member.hyperparameters() == pytest.approx({'learning_rate': 1e-3, 'entropy_coef': 1e-3,
                                                      'lambda_teacher_0': 2.0, 'lambda_teacher_1': 0.25})
    assert [float(v) for v in learner.kickstarter.weights.values()] == pytest.approx([2.0, 0.25])
    assert member.train()['env_steps'] == 64
    # An explore moves one teacher's lambda only; the compiled step reads it without being traced again.
    assert member.reset(_member_config(str(gin_path), str(tmp_path / 'run'), lambda_teacher_1=3.0))
    assert [float(v) for v in learner.kickstarter.weights.values()] == pytest.approx([2.0, 3.0])
    result = member.train()
    assert result['env_steps'] == 128 and result['tracing_count'] == 1
    assert float(learner.learning_rate.numpy()) == pytest.approx(1e-3)
  finally:
    member.stop()


def test_hyperparameter_setters_name_what_is_wrong():
  learning_rate = tf.Variable(1e-3)
  rnd_like = types.SimpleNamespace(
      hyperparameters=lambda: {'learning_rate': learning_rate, 'intrinsic_advantage_coef': tf.Variable(1.0)},
      kickstarter=None)
  setters = member_lib.hyperparameter_setters(rnd_like, ['learning_rate', 'intrinsic_advantage_coef'])
  setters['learning_rate'][1](5e-4)
  assert learning_rate.numpy() == pytest.approx(5e-4)
  with pytest.raises(ValueError, match=r"has no hyperparameter of that name \(it has \['intrinsic_advantage_coef', "
                                       r"'learning_rate'\]\)"):
    member_lib.hyperparameter_setters(rnd_like, ['entropy_coef'])
  with pytest.raises(ValueError, match='does not kickstart'):
    member_lib.hyperparameter_setters(rnd_like, ['lambda_teacher_0'])
  scheduled = types.SimpleNamespace(kickstarter=types.SimpleNamespace(
      weights=schedules.TeacherWeights(['teacher_0'], schedules=1.0)))
  with pytest.raises(ValueError, match="TeacherWeights.mode = 'pbt'"):
    member_lib.hyperparameter_setters(scheduled, ['lambda_teacher_0'])
  factorised = types.SimpleNamespace(kickstarter=types.SimpleNamespace(weights=schedules.TeacherWeights(
      ['a', 'b'], schedules=1.0, scale_schedule=2.0, mode='pbt')))
  setters = member_lib.hyperparameter_setters(factorised, ['lambda_scale', 'lambda_b'])
  setters['lambda_scale'][1](0.5)
  setters['lambda_b'][1](3.0)
  assert [float(v) for v in factorised.kickstarter.weights.values()] == [0.5, 1.5]
  with pytest.raises(ValueError,
                     match="the teacher weights are \\['lambda_scale', 'lambda_a', 'lambda_b'\\]"):
    member_lib.hyperparameter_setters(factorised, ['lambda_c'])


def test_pbt_main_refuses_a_missing_teacher_before_ray_starts(tmp_path):
  # Run as a user would, from their own directory with a relative path; it fails before Ray starts.
  (tmp_path / 'teacher.keras').write_text('a file that exists')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, os.path.join(repo, 'binaries', 'pbt_main.py'), '--gin_file=pbt_kickstart_cartpole.gin',
       f'--root_dir={tmp_path / "run"}', '--gin_bindings=TeacherSet.paths = '
       "['teacher.keras', 'runs/nowhere/policy']"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300)
  output = result.stdout + result.stderr
  assert result.returncode != 0
  assert f"teacher 'runs/nowhere/policy' (TeacherSet.paths) does not exist, seen from {tmp_path}" in output
  assert 'Started a local Ray instance' not in output
  assert not os.path.exists(tmp_path / 'run' / 'population')


def test_member_settings_carry_the_working_directory_and_names_survive_a_failed_result(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  settings = member_lib.member_settings(3, 'run', [], [], 512)
  assert settings['working_dir'] == str(tmp_path)
  assert settings['root_dir'] == str(tmp_path / 'run')
  # Ray Tune's Result of a trial that errored before its first report has no config, only its directory.
  failed = types.SimpleNamespace(config=None, path=str(tmp_path / 'population' / 'member_3'))
  assert scheduler_lib.member_name(failed) == 'member_3'
  assert scheduler_lib.hyperparameters_of(None, {'learning_rate': None}) == {}
