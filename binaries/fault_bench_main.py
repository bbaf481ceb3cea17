r"""Fault benchmark: Protégé's own processes killed and fed bad state, and what each fault cost.

  python binaries/fault_bench_main.py --output=BENCHMARKS.md     (`make fault-bench`; ~10 minutes)

Faults, each against the real binaries and modules users run:

* `train_main` killed with SIGKILL at `--kills` random moments and run again each time: every restart must
  resume from its newest checkpoint, and the last run must end with `env_steps` exactly the budget. What a
  kill loses is the training since the last checkpoint, done again: measured per kill.
* `train_main` stopped by SIGTERM and SIGINT: it must save the iteration under way and resume there.
* A PBT member checkpoint (`pbt.member.write_checkpoint`, in its own process) killed with SIGKILL while
  it replaces the member's checkpoint `--kills` times: the directory must always hold a whole checkpoint.
* A damaged, an empty and a stale `checkpoints/checkpoint` index: the run must resume from the newest
  `ckpt-*` and say so.
* A NaN reward (an environment that returns one), NaN observations (a NaN reaches the loss and the
  gradients) and a NaN written into a weight of the newest checkpoint: one line, or a warning and the
  checkpoint before; nothing non-finite saved; the good checkpoints kept.

The table and the command are written into `--output` (its "Faults" section is replaced; the rest of the
file is kept). A benchmark, not a test: it takes minutes and its figures are times.
"""

import datetime
import json
import os
import platform
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_string('output', 'BENCHMARKS.md', 'Markdown file whose "Faults" section is (re)written.')
flags.DEFINE_integer('kills', 20, 'Random SIGKILLs of train_main, and of a member checkpoint writer.')
flags.DEFINE_integer('seed', 0, 'Seeds the kill moments.')
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_MAIN = os.path.join(REPO, 'binaries', 'train_main.py')
SECTION_START = '<!-- fault_bench_main: begin -->'
SECTION_END = '<!-- fault_bench_main: end -->'
STEPS_PER_ITERATION = 16  # 2 envs x 8 steps
# Large enough that every kill lands before the budget is spent (a run gains ~500-2,000 env steps a kill).
BUDGET_ITERATIONS = 2500

TINY_GIN = os.path.join(REPO, 'tests', 'tiny_cartpole.gin')  # CartPole, 2 envs x 8 steps an iteration


def _command(gin_path, root, *bindings, extra_gin=()):
  # Checkpoints every 0.5 s unless a binding says otherwise (bindings are applied in order).
  bindings = ('train.checkpoint_interval_seconds = 0.5',) + bindings
  return ([sys.executable, TRAIN_MAIN, f'--gin_file={gin_path}', f'--root_dir={root}'] +
          [f'--gin_file={path}' for path in extra_gin] + [f'--gin_bindings={b}' for b in bindings])


def _environment():
  return dict(os.environ, PYTHONPATH=REPO)  # `import tests.faulty_envs` in the fault gin files


def _run(gin_path, root, *bindings, extra_gin=()):
  return subprocess.run(_command(gin_path, root, *bindings, extra_gin=extra_gin), cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=_environment())


def _env_steps(line):
  match = re.search(r'env steps ([\d,]+)/', line)
  return int(match.group(1).replace(',', '')) if match else None


def _error(result):
  lines = [line for line in result.stderr.splitlines() if ': error:' in line]
  return lines[0] if lines else ''


def _summary(root):
  with open(os.path.join(root, 'summary.json')) as f:
    return json.load(f)


def _checkpoint_steps(checkpoint_dir):
  """Env steps of the whole checkpoints on disk (ckpt-<iteration>.index written), newest first; [0] if none."""
  names = os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []
  iterations = [int(m.group(1)) for m in (re.fullmatch(r'ckpt-(\d+)\.index', n) for n in names) if m]
  return sorted((i * STEPS_PER_ITERATION for i in iterations), reverse=True) + [0]


def kills_of_train_main(gin_path, work, kills, rng):
  """SIGKILL train_main at random moments; returns one row per kill and the final summary."""
  root = os.path.join(work, 'killed')
  budget = BUDGET_ITERATIONS * STEPS_PER_ITERATION
  rows = []
  while len(rows) < kills:
    process = subprocess.Popen(_command(gin_path, root, f'train.total_env_steps = {budget}'), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    resumed, reached = 0, 0
    for line in process.stdout:
      match = re.search(r'Resumed from \S+ at ([\d,]+) env steps', line)
      if match:
        resumed = int(match.group(1).replace(',', ''))
      if 'Training CartPole-v1' in line:
        break
    # A moment anywhere in the next few seconds: start-up, tracing, training, checkpoint writes.
    deadline = time.time() + rng.uniform(0.0, 4.0)
    os.set_blocking(process.stdout.fileno(), False)
    while time.time() < deadline and process.poll() is None:
      for line in process.stdout:
        reached = _env_steps(line) or reached
      time.sleep(0.01)
    if process.poll() is not None:  # it finished (or failed) before its kill: not a kill
      break
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows.append({'kill': len(rows) + 1, 'resumed_at': resumed, 'reached': max(reached, resumed),
                 'on_disk': _checkpoint_steps(os.path.join(root, 'checkpoints'))})
  result = _run(gin_path, root, f'train.total_env_steps = {budget}')
  match = re.search(r'Resumed from \S+ at ([\d,]+) env steps', result.stdout)
  final_resume = int(match.group(1).replace(',', '')) if match else 0
  for row, next_resume in zip(rows, [r['resumed_at'] for r in rows[1:]] + [final_resume]):
    row['next_resumed_at'] = next_resume
    row['lost'] = max(0, row['reached'] - next_resume)  # trained, killed before a checkpoint, done again
  summary = _summary(root) if result.returncode == 0 else {'error': _error(result)}
  return rows, summary, budget


def signals_of_train_main(gin_path, work):
  """SIGTERM and SIGINT: the iteration under way is saved, the next run resumes there."""
  outcomes = []
  for name in ('SIGTERM', 'SIGINT'):
    root = os.path.join(work, name.lower())
    process = subprocess.Popen(_command(gin_path, root, 'train.total_env_steps = 100000000',
                                        'train.checkpoint_interval_seconds = 3600'),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
      if (_env_steps(line) or 0) >= 20 * STEPS_PER_ITERATION:
        break
    sent = time.time()
    process.send_signal(getattr(signal, name))
    stdout, _ = process.communicate(timeout=120)
    seconds = time.time() - sent
    match = re.search(r'stopped at ([\d,]+) env steps; saved', stdout)
    stopped = int(match.group(1).replace(',', '')) if match else None
    resumed = None
    if stopped is not None:
      result = _run(gin_path, root, f'train.total_env_steps = {stopped + 2 * STEPS_PER_ITERATION}')
      found = re.search(r'Resumed from \S+ at ([\d,]+) env steps', result.stdout)
      resumed = int(found.group(1).replace(',', '')) if found else None
    outcomes.append({'signal': name, 'exit_code': process.returncode, 'seconds': seconds, 'stopped_at': stopped,
                     'resumed_at': resumed})
  return outcomes


_MEMBER_WRITER = textwrap.dedent("""
    import sys
    import tensorflow as tf
    from protege.pbt import member
    directory, version = sys.argv[1], int(sys.argv[2])
    state = tf.train.Checkpoint(weights=tf.Variable(tf.fill([1 << 22], float(version))))
    print('ready', flush=True)
    while True:
      version += 1
      state.weights.assign(tf.fill([1 << 22], float(version)))
      member.write_checkpoint(state, directory, metadata={'version': version})
""")


def kills_of_member_writes(work, kills, rng):
  """SIGKILL a process that replaces one member checkpoint (16 MB) over and over; read it after each kill."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.pbt import member  # pylint: disable=g-import-not-at-top
  directory = os.path.join(work, 'member_checkpoint')
  script = os.path.join(work, 'member_writer.py')
  with open(script, 'w') as f:
    f.write(_MEMBER_WRITER)
  reader = tf.train.Checkpoint(weights=tf.Variable(tf.zeros([1 << 22])))
  whole = absent = damaged = 0
  version = 0
  for _ in range(kills):
    process = subprocess.Popen([sys.executable, script, directory, str(version)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=_environment())
    assert process.stdout.readline().strip() == 'ready'
    time.sleep(rng.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    try:
      metadata = member.read_checkpoint(reader, directory)
    except member.CheckpointError as error:
      if 'holds no complete member checkpoint' in str(error):
        absent += 1
      else:
        damaged += 1
      continue
    values = reader.weights.numpy()
    if values.min() == values.max() == metadata['version']:
      whole += 1
      version = metadata['version']
    else:
      damaged += 1
  leftovers = [name for name in os.listdir(directory) if name != member.CHECKPOINT_SUBDIR]
  return {'kills': kills, 'whole': whole, 'absent': absent, 'damaged': damaged, 'last_version': version,
          'leftovers_after_next_write': leftovers}


def damaged_indexes(gin_path, work):
  rows = []
  for name, content in (('garbage', 'model_checkpoint_path: "ckpt-4" {{{'), ('empty', ''),
                        ('names a missing checkpoint', 'model_checkpoint_path: "ckpt-99"\n')):
    root = os.path.join(work, 'index_' + name.split()[0])
    first = _run(gin_path, root, 'train.checkpoint_interval_seconds = 0.001')
    with open(os.path.join(root, 'checkpoints', 'checkpoint'), 'w') as f:
      f.write(content)
    result = _run(gin_path, root, 'train.total_env_steps = 96')
    found = re.search(r'Resumed from \S+ at ([\d,]+) env steps', result.stdout)
    warned = 'warning: the checkpoint index' in result.stdout
    rows.append({'fault': f'`checkpoints/checkpoint` {name}', 'ok': first.returncode == 0 and result.returncode == 0,
                 'resumed_at': int(found.group(1).replace(',', '')) if found else None, 'warned': warned})
  return rows


def nan_faults(gin_path, work):
  rows = []
  faulty = {}
  for kind, env_id in (('reward', 'Faulty/NaNRewardCartPole-v1'), ('observation', 'Faulty/NaNObservationCartPole-v1')):
    path = os.path.join(work, f'nan_{kind}.gin')
    with open(path, 'w') as f:
      f.write(f"import tests.faulty_envs\nmake_environment.env_id = '{env_id}'\n")
    faulty[kind] = path
  # A NaN reward from the start of a run.
  root = os.path.join(work, 'nan_reward')
  result = _run(gin_path, root, extra_gin=[faulty['reward']])
  rows.append({'fault': 'NaN reward (the 10th step of an environment)', 'exit_code': result.returncode,
               'line': _error(result), 'kept': _checkpoints(root)})
  # NaN observations after 4 good iterations: the NaN reaches the loss.
  root = os.path.join(work, 'nan_observation')
  _run(gin_path, root, 'train.checkpoint_interval_seconds = 0.001')
  before = _checkpoints(root)
  result = _run(gin_path, root, 'train.total_env_steps = 160', 'train.checkpoint_interval_seconds = 0.001',
                extra_gin=[faulty['observation']])
  rows.append({'fault': 'NaN observations after 4 iterations', 'exit_code': result.returncode,
               'line': _error(result), 'kept': _checkpoints(root), 'before': before})
  # A NaN written into a weight of the newest checkpoint.
  root = os.path.join(work, 'nan_weight')
  _run(gin_path, root, 'train.checkpoint_interval_seconds = 0.001')
  _poison_newest_checkpoint(gin_path, root)
  result = _run(gin_path, root, 'train.total_env_steps = 96')
  warning = next((line for line in result.stdout.splitlines() if line.startswith('warning: checkpoint')), '')
  found = re.search(r'Resumed from \S+ at ([\d,]+) env steps', result.stdout)
  rows.append({'fault': 'NaN written into a weight of the newest checkpoint (ckpt-4)',
               'exit_code': result.returncode, 'line': warning,
               'resumed_at': int(found.group(1).replace(',', '')) if found else None, 'kept': _checkpoints(root)})
  return rows


def _checkpoints(root):
  directory = os.path.join(root, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(name[:-len('.index')] for name in os.listdir(directory) if name.endswith('.index'))


def _poison_newest_checkpoint(gin_path, root):
  """Rewrites the newest checkpoint of `root` with a NaN in the network's first weight (its own process)."""
  script = textwrap.dedent(f"""
      import numpy as np, tensorflow as tf
      from protege.binaries import common
      from protege.agents.training import trainer as trainer_lib
      common.parse_gin([{gin_path!r}], [])
      trainer = trainer_lib.Trainer({root!r})
      path = trainer.latest_checkpoint
      kernel = trainer.network.trainable_variables[0]
      kernel.assign(tf.tensor_scatter_nd_update(kernel, [[0, 0]], [np.nan]))
      trainer.checkpoint.write(path)  # the same files, now holding a NaN
      trainer.close()
  """)
  subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True, capture_output=True, env=_environment())


def _report(command, started, finished, kill_rows, kill_summary, budget, signal_rows, member, index_rows, nan_rows):
  lost = sorted(row['lost'] for row in kill_rows)
  median_lost = lost[len(lost) // 2] if lost else 0
  # A restart resumes from the newest checkpoint the index names; one killed between a checkpoint's files
  # and the index update resumes from the one before (as TensorFlow does), never from an older one.
  from_newest = sum(row['next_resumed_at'] == row['on_disk'][0] for row in kill_rows)
  resumes_ok = all(row['next_resumed_at'] in row['on_disk'][:2] for row in kill_rows)
  others = ('' if from_newest == len(kill_rows) else
            ', the others from the one before, which the index named (killed between the files and the index)')
  lines = [
      SECTION_START,
      f'## Faults (`binaries/fault_bench_main.py`, {started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC)',
      '',
      f'Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} cores, Python '
      f'{platform.python_version()}. Each fault is done to Protégé\'s own processes: `train_main` on a tiny '
      f'CartPole configuration (2 envs × 8 steps an iteration, checkpoints every 0.5 s), `pbt.member.write_checkpoint` '
      'in its own process.',
      '',
      '| fault | tried | survived | what was lost |',
      '|---|---|---|---|',
  ]
  final_steps = kill_summary.get('env_steps')
  lines.append(
      f'| `train_main` killed with SIGKILL at random moments (0–4 s after start), run again each time | '
      f'{len(kill_rows)} | {"yes" if final_steps == budget and resumes_ok else "NO"}: {from_newest} of '
      f'{len(kill_rows)} restarts resumed from the newest checkpoint on disk{others}; the last run ended at env_steps = {final_steps:,} (budget {budget:,}) | '
      f'training since the last checkpoint, done again: median {median_lost} env steps, at most '
      f'{max(lost) if lost else 0} |' if final_steps is not None else
      f'| `train_main` killed with SIGKILL | {len(kill_rows)} | NO: {kill_summary.get("error")} | ? |')
  for row in signal_rows:
    ok = row['stopped_at'] is not None and row['resumed_at'] == row['stopped_at']
    lines.append(f'| `train_main` sent {row["signal"]} | 1 | {"yes" if ok else "NO"}: saved and exited with '
                 f'{row["exit_code"]} in {row["seconds"]:.1f} s; resumed at {row["resumed_at"]} env steps | nothing |')
  lines.append(
      f'| a PBT member checkpoint killed with SIGKILL mid-replacement (16 MB, replaced back to back) | '
      f'{member["kills"]} | {"yes" if member["whole"] == member["kills"] else "NO"}: {member["whole"]} reads '
      f'whole, {member["absent"]} without a checkpoint, {member["damaged"]} damaged | the replacement under way |')
  for row in index_rows:
    lines.append(f'| {row["fault"]} | 1 | {"yes" if row["ok"] and row["resumed_at"] == 64 and row["warned"] else "NO"}: '
                 f'resumed at {row["resumed_at"]} env steps (the newest ckpt-4), with a warning | nothing |')
  for row in nan_rows:
    detail = row['line'].replace('|', '\\|')
    if 'resumed_at' in row:
      ok = row['exit_code'] == 0 and row['resumed_at'] == 48
      lines.append(f'| {row["fault"]} | 1 | {"yes" if ok else "NO"}: resumed from ckpt-3 at {row["resumed_at"]} env '
                   f'steps: "{detail}" | ckpt-4 |')
    else:
      ok = row['exit_code'] == 2 and row['kept'] == row.get('before', row['kept'])
      lines.append(f'| {row["fault"]} | 1 | {"yes" if ok else "NO"}: exit {row["exit_code"]}, "{detail}" | '
                   f'nothing saved after the fault; kept: {", ".join(row["kept"]) or "none"} |')
  lines += ['', SECTION_END]
  return '\n'.join(lines) + '\n'


def _write_section(path, section):
  text = open(path).read() if os.path.exists(path) else '# Benchmarks\n'
  if SECTION_START in text and SECTION_END in text:
    before, rest = text.split(SECTION_START, 1)
    after = rest.split(SECTION_END, 1)[1].lstrip('\n')
    text = before + section + ('\n' + after if after else '')
  else:
    text = text.rstrip('\n') + '\n\n' + section
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def main(argv):
  del argv
  command = 'python ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
  started = datetime.datetime.now(datetime.timezone.utc)
  rng = random.Random(FLAGS.seed)
  with tempfile.TemporaryDirectory(prefix='fault_bench_') as work:
    gin_path = TINY_GIN
    print(f'Killing train_main {FLAGS.kills} times...', flush=True)
    kill_rows, kill_summary, budget = kills_of_train_main(gin_path, work, FLAGS.kills, rng)
    print('Signals...', flush=True)
    signal_rows = signals_of_train_main(gin_path, work)
    print(f'Killing a member checkpoint writer {FLAGS.kills} times...', flush=True)
    member = kills_of_member_writes(work, FLAGS.kills, rng)
    print('Damaged indexes, NaNs...', flush=True)
    index_rows = damaged_indexes(gin_path, work)
    nan_rows = nan_faults(gin_path, work)
  finished = datetime.datetime.now(datetime.timezone.utc)
  section = _report(command, started, finished, kill_rows, kill_summary, budget, signal_rows, member, index_rows,
                    nan_rows)
  print(section)
  print('Per kill of train_main (resumed at → reached → next resumed at, env steps):',
        [(r['resumed_at'], r['reached'], r['next_resumed_at']) for r in kill_rows])
  _write_section(FLAGS.output, section)
  print(f'Written to {FLAGS.output}.')


if __name__ == '__main__':
  app.run(main)
