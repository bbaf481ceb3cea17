"""The learner interface (`agents.learners.base`): what PPO, IMPALA and RND offer the run and PBT."""

import numpy as np
import pytest
import tensorflow as tf

from protege.agents.training import trainer as trainer_lib
from protege.agents.learners import base
from protege.runtime import errors
import test_impala_learner
import test_ppo_learner
import test_rnd

# The checkpoint keys of each learner: a resumed run reads checkpoints written by earlier versions, and a key
# added or renamed would make `assert_existing_objects_matched` refuse them.
PPO_CHECKPOINT = {'network', 'optimizer', 'train_step', 'learning_rate', 'clip_epsilon', 'entropy_coef',
                  'value_coef', 'advantage_coef_extrinsic'}
IMPALA_CHECKPOINT = {'network', 'optimizer', 'train_step', 'learning_rate', 'entropy_coef', 'value_coef',
                     'discount', 'vtrace_lambda', 'clip_rho_threshold', 'clip_c_threshold', 'clip_pg_rho_threshold'}
RND_OWN_CHECKPOINT = {'advantage_coef_intrinsic', 'discount_intrinsic', 'rnd_target', 'rnd_predictor',
                      'rnd_predictor_optimizer', 'rnd_observation_normalizer', 'rnd_intrinsic_return_normalizer',
                      'rnd_intrinsic_return_filter', 'rnd_intrinsic_discount'}


def _ppo():
  net = test_ppo_learner._network()
  return test_ppo_learner._learner(net, test_ppo_learner._batch(net))


def _impala():
  net = test_impala_learner._network()
  return test_impala_learner._learner(net, test_impala_learner._batch(net))


def _rnd():
  net = test_rnd._network()
  return test_rnd._rnd_learner(net, [test_rnd._batch(seed=s) for s in range(3)])


def test_ppo_and_impala_are_learners_with_their_checkpoint_keys_and_hyperparameters():
  ppo_learner, impala_learner = _ppo(), _impala()
  assert isinstance(ppo_learner, base.Learner) and isinstance(impala_learner, base.Learner)
  assert set(ppo_learner.checkpoint_items()) == PPO_CHECKPOINT
  assert set(impala_learner.checkpoint_items()) == IMPALA_CHECKPOINT
  assert set(ppo_learner.hyperparameters()) == {'learning_rate', 'clip_epsilon', 'entropy_coef', 'value_coef',
                                                'discount', 'gae_lambda'}
  assert set(impala_learner.hyperparameters()) == IMPALA_CHECKPOINT - {'network', 'optimizer', 'train_step'}
  for learner in (ppo_learner, impala_learner):
    assert learner.hyperparameters()['learning_rate'] is learner.learning_rate
    assert learner.kickstarter is None and int(learner.train_step.numpy()) == 0


@pytest.mark.parametrize('make', [_ppo, _impala], ids=['ppo', 'impala'])
def test_a_hyperparameter_assigned_through_the_interface_reaches_the_compiled_step(make):
  learner = make()
  learner.run()
  assert learner.tracing_count() == 1
  # A learning rate of 0 (constant schedule in both tests' learners): the next step changes no weight.
  learner.hyperparameters()['learning_rate'].assign(0.0)
  before = [v.numpy() for v in learner.network.trainable_variables]
  metrics = learner.run()
  after = [v.numpy() for v in learner.network.trainable_variables]
  assert float(metrics['learning_rate']) == 0.0
  assert all(np.array_equal(b, a) for b, a in zip(before, after))
  assert learner.tracing_count() == 1 and int(learner.train_step.numpy()) == 2


def test_rnd_wraps_its_inner_learner_through_the_interface():
  learner = _rnd()
  inner = learner.inner
  assert isinstance(learner, base.LearnerWrapper) and isinstance(inner, base.OnPolicyLearner)
  assert learner.train_step is inner.train_step and learner.network is inner.network
  assert learner.strategy is inner.strategy and learner.kickstarter is None
  hyperparameters = learner.hyperparameters()
  # The inner learner's, and RND's own (the advantage weights are the inner learner's value heads').
  assert hyperparameters['learning_rate'] is inner.learning_rate
  assert hyperparameters['intrinsic_advantage_coef'] is inner.value_heads['intrinsic'].advantage_coef
  assert {'intrinsic_discount', 'observation_clip', 'extrinsic_advantage_coef'} <= set(hyperparameters)
  assert set(learner.checkpoint_items()) == PPO_CHECKPOINT | RND_OWN_CHECKPOINT
  learner.run()
  assert learner.tracing_count() == 1 and inner._iterator is not None
  learner.release_iterator()
  assert inner._iterator is None


def test_a_learner_fn_that_builds_no_learner_is_refused(tmp_path):
  with pytest.raises(errors.ConfigError, match=r'train.learner_fn built a object, which is not a learner'):
    trainer_lib.Trainer(str(tmp_path / 'run'), learner_fn=lambda **kwargs: object(), total_env_steps=64)
