"""Every shipped gin file parses strictly (unknown names are errors, not skipped)."""

import glob
import logging
import os

import gin
import pytest

from protege.binaries import common

GIN_FILES = sorted(glob.glob(os.path.join(common.GIN_DIR, '*.gin')))


def test_there_are_gin_files():
  names = {os.path.basename(p) for p in GIN_FILES}
  assert {'quickstart.gin', 'ppo_atari.gin'} <= names, names


@pytest.mark.parametrize('path', GIN_FILES, ids=os.path.basename)
def test_gin_file_parses(path):
  common.parse_gin([path], [])
  if os.path.basename(path).startswith('data_free_'):
    assert gin.query_parameter('distill_data_free.student_fn')  # binaries/distill_data_free_main.py's
  else:
    assert gin.query_parameter('make_environment.env_id')


def test_an_include_logs_no_error(caplog):
  # gin's resource reader logs "Path not found" for every include before it finds the file on the search
  # path; a user's console must not show an error for a file that is there.
  caplog.set_level(logging.INFO)
  common.parse_gin([os.path.join(common.GIN_DIR, 'kickstart_impala_minatar_multitask.gin')], [])
  assert gin.query_parameter('IMPALALearner.optimizer') == 'rmsprop'   # parts/impala_minatar.gin was read
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_typo_is_a_config_error():
  with pytest.raises(common.ConfigError, match='lerning_rate'):
    common.parse_gin([os.path.join(common.GIN_DIR, 'quickstart.gin')], ['PPOLearner.lerning_rate = 1.0'])


def test_missing_file_is_a_config_error():
  with pytest.raises(common.ConfigError, match='no_such.gin'):
    common.parse_gin(['no_such.gin'], [])


def test_tensorflow_threads_names_bad_values_and_refuses_a_late_change():
  with pytest.raises(ValueError, match=r'tensorflow_threads.intra_op must be an int >= 0.*-1'):
    common.tensorflow_threads(intra_op=-1)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.constant(1.0) + 1.0  # the runtime has started in this process: the pools cannot change any more
  current = tf.config.threading.get_intra_op_parallelism_threads()
  common.tensorflow_threads(intra_op=current, inter_op=tf.config.threading.get_inter_op_parallelism_threads())
  with pytest.raises(RuntimeError, match='before TensorFlow runs its first op'):
    common.tensorflow_threads(intra_op=current + 3, inter_op=current + 3)
