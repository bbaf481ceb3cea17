"""Every shipped gin file parses strictly (unknown names are errors, not skipped)."""

import glob
import os

import gin
import pytest

from binaries import common

GIN_FILES = sorted(glob.glob(os.path.join(common.GIN_DIR, '*.gin')))


def test_there_are_gin_files():
  names = {os.path.basename(p) for p in GIN_FILES}
  assert {'quickstart.gin', 'ppo_atari.gin'} <= names, names


@pytest.mark.parametrize('path', GIN_FILES, ids=os.path.basename)
def test_gin_file_parses(path):
  common.parse_gin([path], [])
  assert gin.query_parameter('make_environment.env_id')


def test_typo_is_a_config_error():
  with pytest.raises(common.ConfigError, match='lerning_rate'):
    common.parse_gin([os.path.join(common.GIN_DIR, 'quickstart.gin')], ['PPOLearner.lerning_rate = 1.0'])


def test_missing_file_is_a_config_error():
  with pytest.raises(common.ConfigError, match='no_such.gin'):
    common.parse_gin(['no_such.gin'], [])
