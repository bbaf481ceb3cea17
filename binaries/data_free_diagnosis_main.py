r"""What a data-free run's generated frames lack, against the states its teacher visits (a report; no training).

  python binaries/data_free_diagnosis_main.py --run_dir=runs/minatar_breakout_data_free \
      --channel_names=paddle,ball,trail,brick

Reads a finished `distill_data_free_main` run of a frame policy (its `exemplars.npz`: the generators'
frames; its `teacher_states.npz`: up to 4,096 states the teacher visited in its evaluation, kept for this
report and never trained on) and the teacher it names, and writes `<run_dir>/diagnosis.md` and
`diagnosis.json`: per channel the count profile, the spatial occupancy distance, the co-occurrence of
channels, the binary share, the share of the teacher's states outside what the generator ever draws, the
teacher's agreement with itself on its states projected onto that support and with the never-used channels
filled as the generator fills them (`agents/data_free/diagnosis.py`), and the teacher's value on its states
and on the generated frames.
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from protege.binaries import common  # noqa: E402
from protege.runtime import errors  # noqa: E402
from protege.runtime import run_directory  # noqa: E402

flags.DEFINE_string('run_dir', None, 'A finished distill_data_free_main run of a frame policy, evaluated '
                    '(distill_data_free.eval_episodes > 0).')
flags.DEFINE_list('channel_names', [], 'Names of the channels, in order (default c0, c1, ...); channels past '
                  'the names are reported only when active in either set.')
flags.DEFINE_float('threshold', 0.5, 'A cell is active above this value.')
flags.DEFINE_float('min_frequency', 0.01, 'A cell is in the generator\'s support when active in at least this '
                   'share of its frames.')
flags.DEFINE_bool('traceback', False, 'Show the traceback of an error instead of one line.')
flags.mark_flag_as_required('run_dir')
FLAGS = flags.FLAGS


def _read(run_dir: str):
  paths = {name: os.path.join(run_dir, name) for name in ('summary.json', 'exemplars.npz', 'teacher_states.npz')}
  missing = [name for name, path in paths.items() if not os.path.exists(path)]
  if missing:
    raise errors.ConfigError(f'--run_dir={run_dir} has no {", ".join(missing)}: pass a finished '
                             'distill_data_free_main run evaluated in its game (distill_data_free.eval_episodes > 0).')
  with open(paths['summary.json']) as f:
    summary = json.load(f)
  generated = np.load(paths['exemplars.npz'])['observations']
  states = np.load(paths['teacher_states.npz'])['observations']
  if generated.ndim != 4 or states.ndim != 4:
    raise errors.ConfigError(f'--run_dir={run_dir} holds observations of shape {states.shape[1:]}: the '
                             'diagnosis compares frames [H, W, C].')
  return summary, generated, states


def _teacher_outputs(teacher_path: str, observation_sets):
  """The teacher's argmax action and value (None without a critic) on each array of `observation_sets` (the
  teacher loaded once)."""
  # pylint: disable=g-import-not-at-top  (TensorFlow only when the measures need the teacher)
  import tensorflow as tf
  from tf_agents.specs import tensor_spec
  from protege.agents.data_free import adapters
  from protege.agents.distillation import teacher_loading
  _, action_spec = adapters.policy_specs(teacher_path)
  first = observation_sets[0]
  observation_spec = tensor_spec.TensorSpec(first.shape[1:], first.dtype)
  teacher = teacher_loading.load_teacher(teacher_path, observation_spec, action_spec)
  outputs = []
  for observations in observation_sets:
    logits, values = [], []
    for i in range(0, len(observations), 1024):
      batch_logits, batch_values, _ = teacher.logits_and_value(tf.convert_to_tensor(observations[i:i + 1024]))
      logits.append(batch_logits.numpy())
      values.append(None if batch_values is None else batch_values.numpy())
    value = None if values[0] is None else np.concatenate(values)
    outputs.append((np.argmax(np.concatenate(logits), axis=-1), value))
  return outputs


def _value_summary(value):
  return None if value is None else {'mean': float(np.mean(value)), 'std': float(np.std(value))}


def diagnose(run_dir: str, channel_names, threshold: float, min_frequency: float) -> dict:
  from protege.agents.data_free import diagnosis  # pylint: disable=g-import-not-at-top
  summary, generated, states = _read(run_dir)
  generated = generated.astype(np.float32)
  states = states.astype(np.float32)
  profiles = {name: diagnosis.count_profile(frames, threshold) for name, frames in
              (('generated', generated), ('teacher_states', states))}
  distance = diagnosis.occupancy_distance(generated, states, threshold)
  co = {name: diagnosis.co_occurrence(frames, threshold) for name, frames in
        (('generated', generated), ('teacher_states', states))}
  mask = diagnosis.support(generated, threshold, min_frequency)
  dead = diagnosis.dead_channels(states, threshold)
  (actions, state_values), (projected, _), (transplanted, _), (_, generated_values) = _teacher_outputs(
      summary['teacher'], [states, diagnosis.project(states, mask), diagnosis.transplant(states, generated, dead),
                           generated])
  channels = generated.shape[-1]
  names = [channel_names[c] if c < len(channel_names) else f'c{c}' for c in range(channels)]
  shown = [c for c in range(channels) if c < len(channel_names)
           or profiles['generated']['share_empty'][c] < 1 or profiles['teacher_states']['share_empty'][c] < 1]
  return {
      'run_dir': run_dir, 'generated_frames': int(len(generated)), 'teacher_states': int(len(states)),
      'threshold': threshold, 'min_frequency': min_frequency,
      'channels': [{'channel': names[c],
                    **{f'{kind}_{key}': float(profiles[kind][key][c]) for kind in profiles for key in profiles[kind]},
                    'occupancy_distance': float(distance[c])} for c in shown],
      'binary_share': {'generated': diagnosis.binary_share(generated), 'teacher_states': diagnosis.binary_share(states)},
      'co_occurrence': {kind: [[float(co[kind][i, j]) for j in shown] for i in shown] for kind in co},
      'co_occurrence_channels': [names[c] for c in shown],
      'support_cells': int(mask.sum()), 'cells': int(mask.size),
      'off_support': diagnosis.off_support(states, mask, threshold),
      'teacher_agreement_on_projected_states': float(np.mean(actions == projected)),
      'dead_channels': [names[c] for c in range(channels) if dead[c]],
      'teacher_agreement_with_generated_dead_channels': float(np.mean(actions == transplanted)),
      'teacher_value': {'teacher_states': _value_summary(state_values),
                        'generated': _value_summary(generated_values)},
      'student_agreement_on_teacher_states': summary.get('agreement_on_teacher_states', {}).get('argmax_agreement'),
  }


def report(result: dict) -> str:
  lines = [f'Generated frames: {result["generated_frames"]:,}; teacher states: {result["teacher_states"]:,}; '
           f'a cell is active above {result["threshold"]}.', '',
           '| channel | cells per frame, generated | cells per frame, teacher\'s states | frames with exactly one '
           'cell, generated / teacher\'s | empty, generated / teacher\'s | where (total variation, 0 same, 1 '
           'disjoint) |', '|---|---|---|---|---|---|']
  for row in result['channels']:
    lines.append(f'| {row["channel"]} | {row["generated_mean_cells"]:.2f} | {row["teacher_states_mean_cells"]:.2f} | '
                 f'{row["generated_share_one"]:.0%} / {row["teacher_states_share_one"]:.0%} | '
                 f'{row["generated_share_empty"]:.0%} / {row["teacher_states_share_empty"]:.0%} | '
                 f'{row["occupancy_distance"]:.2f} |')
  names = result['co_occurrence_channels']
  lines += ['', '| both present (generated / teacher\'s states) | ' + ' | '.join(names) + ' |',
            '|---|' + '---|' * len(names)]
  for i, name in enumerate(names):
    lines.append(f'| {name} | ' + ' | '.join(f'{result["co_occurrence"]["generated"][i][j]:.0%} / '
                                             f'{result["co_occurrence"]["teacher_states"][i][j]:.0%}'
                                             for j in range(len(names))) + ' |')
  off = result['off_support']
  lines += ['', f'- Values within 0.1 of 0 or 1: generated {result["binary_share"]["generated"]:.0%}, teacher\'s '
            f'states {result["binary_share"]["teacher_states"]:.0%}.',
            f'- The generator\'s support (cells on in ≥ {result["min_frequency"]:.0%} of its frames): '
            f'{result["support_cells"]} of {result["cells"]} cells. Outside it: {off["share_of_active_cells"]:.0%} of '
            f'the teacher\'s states\' active cells, in {off["share_of_states"]:.0%} of its states.',
            f'- The teacher on its states with those cells cleared picks the same action as on the states '
            f'{result["teacher_agreement_on_projected_states"]:.0%} of the time; the student agrees with the '
            f'teacher on its states {result["student_agreement_on_teacher_states"]:.0%} of the time.']
  values = result['teacher_value']
  if values['teacher_states'] is not None:
    lines.append(f'- The teacher\'s value: {values["teacher_states"]["mean"]:.2f} ± {values["teacher_states"]["std"]:.2f} '
                 f'on its states, {values["generated"]["mean"]:.2f} ± {values["generated"]["std"]:.2f} on the '
                 'generated frames (mean ± standard deviation).')
  if result['dead_channels']:
    lines.append(f'- Channels the teacher\'s states never turn on: {", ".join(result["dead_channels"])}. With those '
                 'channels taken from random generated frames, the teacher keeps its action on its states '
                 f'{result["teacher_agreement_with_generated_dead_channels"]:.0%} of the time.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with common.one_line_errors('data_free_diagnosis_main', show_traceback=FLAGS.traceback):
    result = diagnose(FLAGS.run_dir, FLAGS.channel_names, FLAGS.threshold, FLAGS.min_frequency)
    text = report(result)
    print(text)
    with run_directory.atomic_file(os.path.join(FLAGS.run_dir, 'diagnosis.md')) as f:
      f.write(text + '\n')
    with run_directory.atomic_file(os.path.join(FLAGS.run_dir, 'diagnosis.json')) as f:
      json.dump(result, f, indent=2)
    print(f'Wrote {os.path.join(FLAGS.run_dir, "diagnosis.md")} and diagnosis.json.')


def run():
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
