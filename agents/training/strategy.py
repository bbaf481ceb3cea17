"""Choosing the `tf.distribute` strategy from run flags (never from gin: devices are run mechanics).

TF-Agents' `train.utils.strategy_utils.get_strategy` does the same, but importing that module defines
absl flags (`--tpu`, `--use_gpu`) as a side effect, which collides with any binary's own flags; so
the few lines are written here.
"""

from typing import Optional

import tensorflow as tf

from protege.runtime import errors


def get_strategy(tpu: Optional[str] = None, use_gpu: bool = False,
                 logical_cpus: int = 0) -> tf.distribute.Strategy:
  """The strategy the learner runs under.

  Args:
    tpu: TPU name or address (e.g. the TPU VM's name, or 'local' on a TPU VM): TPUStrategy.
    use_gpu: MirroredStrategy over the local GPUs.
    logical_cpus: if > 1, split the host CPU into this many logical devices and mirror over them. This
      runs the multi-replica code path (per-replica datasets, gradient all-reduce) on a machine without
      accelerators; tests use it. Must be called before TensorFlow initialises its devices.

  Returns:
    The default (one-device) strategy when no option is set.
  """
  if sum(bool(x) for x in (tpu, use_gpu, logical_cpus > 1)) > 1:
    raise errors.ConfigError(f'Choose one of --tpu ({tpu!r}), --use_gpu ({use_gpu}) and '
                             f'--logical_cpus ({logical_cpus}).')
  if logical_cpus > 1:
    cpus = tf.config.list_physical_devices('CPU')
    try:
      tf.config.set_logical_device_configuration(
          cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    except RuntimeError as error:
      # Already initialised: fine if it already has the requested devices.
      if len(tf.config.list_logical_devices('CPU')) < logical_cpus:
        raise RuntimeError(f'Cannot create {logical_cpus} logical CPUs after TensorFlow initialised its '
                           f'devices; call get_strategy first. ({error})') from error
    devices = [f'/cpu:{i}' for i in range(logical_cpus)]
    return tf.distribute.MirroredStrategy(devices=devices)
  if use_gpu and not tf.config.list_physical_devices('GPU'):
    raise errors.ConfigError('--use_gpu was given but TensorFlow sees no GPU; install '
                             'tensorflow[and-cuda]==2.15.1 or drop --use_gpu.')
  if tpu:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if use_gpu:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()
