"""What every job of a run builds the same way from the gin settings: the environment's specs, the
network, and the Reverb tables (the learner, the Reverb server, the actors and the evaluators share them).

Only `make_tables` needs Reverb, and imports it when called: the single-process run uses the rest."""

from typing import Any, Callable

from tf_agents.specs import tensor_spec

from protege.agents.distillation import kickstarting
from protege.agents.training import actor as actor_lib
from protege.replay import optional_reverb
from protege.replay import signatures


def environment_specs(env):
  """`(observation_spec, action_spec)` of one environment of a batched environment, as TensorSpecs."""
  return tensor_spec.from_spec(env.observation_spec()), tensor_spec.from_spec(env.action_spec())


def make_network(network_fn: Callable[..., Any], env):
  """A network for `env`'s specs with its variables created (in the current strategy scope)."""
  network = network_fn(*environment_specs(env))
  network.create_variables()
  return network


def make_tables(env, network, sequence_length: int, table_name: str = 'trajectories',
                items_per_learner_step: int = 1) -> list:
  """The Reverb tables of a run: the trajectory queue the actors fill and the learner reads, and the
  variables table through which a learner in another process publishes its weights."""
  reverb_replay = optional_reverb.load("a Reverb server's tables")
  step_spec = actor_lib.step_spec(*environment_specs(env), network, multi_task=actor_lib.is_multi_task(env),
                                  teachers=kickstarting.actor_teachers(*environment_specs(env)))
  signature = signatures.sequence_signature(step_spec, sequence_length, env.batch_size,
                                            stored_frames=signatures.frame_storage(env))
  return [reverb_replay.queue_table(signatures.on_policy_table(signature, name=table_name,
                                                               items_per_learner_step=items_per_learner_step)),
          reverb_replay.variables_table(signatures.variables_signature(network.variables))]
