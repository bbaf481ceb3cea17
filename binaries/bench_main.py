r"""Benchmarks: environment ceilings, end-to-end training throughput and memory, learner FLOP/s.

  python binaries/bench_main.py --output=BENCHMARKS.md     (what `make bench` runs)

Every figure comes from this run, on this machine; the report records the command, the date, the
machine and its load when the run started. On a small machine a second busy process halves the
figures: run it with nothing else running. Each end-to-end run is its own subprocess
(`binaries/train_main.py`), so its peak RSS is its own (from `wait4`).
"""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from protege.binaries import common  # noqa: E402
from protege.runtime import run_directory  # noqa: E402

flags.DEFINE_string('output', 'BENCHMARKS.md', 'Markdown report to write.')
flags.DEFINE_integer('atari_env_steps', 20_480, 'Agent steps of each ppo_atari end-to-end run.')
flags.DEFINE_integer('rnd_iterations', 6, 'Learner iterations of each RND/PPO Montezuma run (x envs x 128 steps).')
flags.DEFINE_integer('quickstart_seeds', 3, 'Seeds of the quickstart end-to-end run (0, 1, ...).')
flags.DEFINE_integer('repeats', 3, 'Repeats of each micro-benchmark (the median is reported).')
flags.DEFINE_bool('quick', False, 'Tiny budgets, to check that the benchmark itself runs.')
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEP_MARKER = '<!-- Everything below this line is kept by bench_main.py. -->'


def _median(values):
  values = sorted(values)
  return values[len(values) // 2]


def _machine():
  model = 'unknown CPU'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  memory = ''
  try:
    with open('/proc/meminfo') as f:
      memory = f'{int(f.readline().split()[1]) / 2**20:.0f} GiB'
  except (OSError, ValueError, IndexError):
    pass
  return f'{os.cpu_count()} cores ({model}), {memory}, Python {platform.python_version()}'


def env_ceiling(env_id: str, num_envs: int, steps: int):
  """Random-action agent steps/s of the raw gymnasium vector env and of it through the adapter."""
  import gymnasium  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from protege.envs import suite  # pylint: disable=g-import-not-at-top
  env = suite.make_environment(env_id=env_id, num_envs=num_envs, seed=0)
  env.reset()
  raw = env.vector_env
  n = env.action_spec().maximum + 1
  rng = np.random.default_rng(0)
  actions = [rng.integers(0, n, size=num_envs) for _ in range(64)]
  results = {}
  for name, step in (('raw', raw.step), ('adapter', env.step)):
    rates = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      for i in range(steps):
        step(actions[i % 64])
      rates.append(steps * num_envs / (time.perf_counter() - start))
    results[name] = _median(rates)
  env.close()
  del gymnasium
  return results


def nature_cnn_flops_per_sample(num_actions: int = 4) -> float:
  """Forward FLOPs (2 per multiply-add) of the Nature CNN actor-critic on one 84x84x4 frame stack."""
  macs = 0
  height, channels = 84, 4
  for filters, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
    height = (height - kernel) // stride + 1
    macs += height * height * filters * kernel * kernel * channels
    channels = filters
  macs += height * height * channels * 512  # dense 512
  macs += 512 * (num_actions + 1)  # policy and value heads
  return 2.0 * macs


def learner_flops(batch_size: int = 256, steps: int = 10):
  """Isolated Nature-CNN training steps (forward + backward + Adam) and a 4096² matmul, in GFLOP/s."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.specs import tensor_spec  # pylint: disable=g-import-not-at-top
  from protege.networks import actor_critic, torsos  # pylint: disable=g-import-not-at-top

  observation_spec = tensor_spec.TensorSpec([84, 84, 4], tf.uint8)
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 3)
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=torsos.NatureCNNTorso)
  net.create_variables()
  optimizer = tf.keras.optimizers.Adam(1e-4)
  frames = tf.constant(np.random.default_rng(0).integers(0, 255, (1, batch_size, 84, 84, 4), np.uint8))

  @tf.function
  def train_step(x):
    with tf.GradientTape() as tape:
      (logits, values), _ = net(x, training=True)
      loss = tf.reduce_mean(tf.square(logits)) + tf.reduce_mean(tf.square(values['extrinsic']))
    grads = tape.gradient(loss, net.trainable_variables)
    optimizer.apply_gradients(zip(grads, net.trainable_variables))
    return loss

  matrix = tf.random.normal([4096, 4096])
  matmul = tf.function(lambda a: tf.matmul(a, a))
  train_step(frames).numpy()
  matmul(matrix).numpy()
  sample_rates, matmul_rates = [], []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(steps):
      train_step(frames).numpy()
    sample_rates.append(steps * batch_size / (time.perf_counter() - start))
    start = time.perf_counter()
    for _ in range(steps):
      matmul(matrix).numpy()
    matmul_rates.append(steps * 2 * 4096**3 / (time.perf_counter() - start) / 1e9)
  # Training costs about 3x the forward pass (forward, and backward for inputs and weights).
  train_flops = 3 * nature_cnn_flops_per_sample()
  samples_per_second = _median(sample_rates)
  return {'samples_per_second': samples_per_second,
          'gflops': samples_per_second * train_flops / 1e9,
          'matmul_gflops': _median(matmul_rates),
          'train_flops_per_sample': train_flops}


def train_run(gin_file: str, bindings, root_dir: str):
  """Runs train_main in a subprocess; returns its summary.json and its own peak RSS."""
  command = [sys.executable, os.path.join(REPO, 'binaries', 'train_main.py'), f'--gin_file={gin_file}',
             f'--root_dir={root_dir}'] + [f'--gin_bindings={b}' for b in bindings]
  start = time.perf_counter()
  with tempfile.TemporaryFile('w+') as log:
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    # wait4 (not Popen.wait) returns this child's own resource usage, hence its own peak RSS.
    _, status, usage = os.wait4(process.pid, 0)
    log.seek(0)
    output = log.read()
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f'{" ".join(command)} failed:\n{output[-3000:]}')
  with open(os.path.join(root_dir, 'summary.json')) as f:
    summary = json.load(f)
  summary['peak_rss_gib'] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
  summary['process_seconds'] = time.perf_counter() - start
  summary['command'] = shlex.join(['python'] + command[1:]).replace(REPO + '/', '')
  return summary




def _training_runs(quick: bool):
  """The end-to-end runs: quickstart seeds, ppo_atari with both actors, RND on Montezuma's Revenge."""
  # The training runs come first: a child forked from a process that has imported TensorFlow would
  # count the parent's resident pages in its peak RSS.
  seeds = [0] if quick else list(range(FLAGS.quickstart_seeds))
  quickstarts, ataris = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in seeds:
      print(f'End-to-end: quickstart, seed {seed}...', flush=True)
      bindings = [f'train.seed = {seed}'] + (['train.total_env_steps = 2048'] if quick else [])
      quickstarts.append(train_run('gin/quickstart.gin', bindings, os.path.join(tmp, f'quickstart_{seed}')))
    atari_steps = 2048 if quick else FLAGS.atari_env_steps
    for mode in ('False', 'True'):
      print(f'End-to-end: ppo_atari, asynchronous_actor={mode}...', flush=True)
      ataris[mode] = train_run('gin/ppo_atari.gin', [f'train.total_env_steps = {atari_steps}',
                                                     'train.eval_episodes = 2',
                                                     'atari_options.max_num_frames_per_episode = 4000',
                                                     f'train.asynchronous_actor = {mode}'],
                               os.path.join(tmp, f'ppo_atari_{mode}'))

    # RND on Montezuma's Revenge (gin/rnd_montezuma.gin): its overhead over the same PPO without RND at
    # 32 envs, and RND at 128 envs (the paper's count). The random-agent seeding of the observation
    # statistics runs before training and is not in the training time; it is shortened here.
    rnds = {}
    for name, envs, extra in (('ppo_32', 32, list(common.PPO_WITHOUT_RND_BINDINGS)),
                              ('rnd_32', 32, []), ('rnd_128', 128, [])):
      iterations = 1 if quick else FLAGS.rnd_iterations
      if name == 'rnd_128' and not quick:
        iterations = max(2, iterations // 2)
      print(f'End-to-end: rnd_montezuma, {name}...', flush=True)
      rnds[name] = train_run('gin/rnd_montezuma.gin', extra + [
          f'make_environment.num_envs = {envs}', f'train.total_env_steps = {iterations * envs * 128}',
          'train.eval_episodes = 2', 'atari_options.max_num_frames_per_episode = 4000',
          'RNDLearner.observation_normalization_steps = 16',
          # Throughput of the method, on ale-py's vector env (the gin file's room tracking steps single
          # envs, about half as fast).
          "make_environment.atari_backend = 'ale_vector'", 'make_environment.ram_info = None'],
          os.path.join(tmp, f'rnd_{name}'))
  return seeds, quickstarts, ataris, rnds


def _rate(summary):
  return summary['env_steps_this_run'] / summary['train_seconds_this_run']


def _time_to_solve(summary):
  solved = next((e for e in summary['evaluations'] if e['return_mean'] >= 475), None)
  return (solved['env_steps'], solved['train_seconds']) if solved else (None, None)


def _end_to_end_section(seeds, quickstarts, ataris, cartpole, breakout):
  """The report's ceilings and end-to-end tables, as lines."""
  solve = [_time_to_solve(q) for q in quickstarts]
  solved_times = [t for _, t in solve if t is not None]
  lines = [
      '## Environment ceilings (random actions, 8 envs)',
      '',
      '| environment | raw vector env, agent steps/s | through the TF-Agents adapter | frames/s (adapter) |',
      '|---|---|---|---|',
      f'| CartPole-v1 (`CartPoleVectorEnv`) | {cartpole["raw"]:,.0f} | {cartpole["adapter"]:,.0f} | '
      f'{cartpole["adapter"]:,.0f} |',
      f'| ALE/Breakout-v5 (`AtariVectorEnv`, RND preprocessing) | {breakout["raw"]:,.0f} | '
      f'{breakout["adapter"]:,.0f} | {4 * breakout["adapter"]:,.0f} |',
      '',
      '## End-to-end training (`binaries/train_main.py`, one process: Reverb server, actor, learner)',
      '',
      'Agent steps/s over the training loop (evaluations excluded; the first iteration, which traces the '
      'compiled functions, included). Peak RSS is the whole process\'s.',
      '',
      '| run | env steps | training seconds | agent steps/s | frames/s | peak RSS | eval return |',
      '|---|---|---|---|---|---|---|',
  ]
  for seed, summary in zip(seeds, quickstarts):
    lines.append(
        f'| quickstart (PPO, CartPole-v1), seed {seed} | {summary["env_steps_this_run"]:,} | '
        f'{summary["train_seconds_this_run"]:.1f} | {_rate(summary):,.0f} | {_rate(summary):,.0f} | '
        f'{summary["peak_rss_gib"]:.2f} GiB | {summary["eval_return_mean"]:.1f} |')
  for mode, summary in ataris.items():
    lines.append(
        f'| ppo_atari (PPO, Nature CNN, Breakout), {"asynchronous" if mode == "True" else "synchronous"} '
        f'actor | {summary["env_steps_this_run"]:,} | {summary["train_seconds_this_run"]:.1f} | '
        f'{_rate(summary):,.0f} | {4 * _rate(summary):,.0f} | {summary["peak_rss_gib"]:.2f} GiB | '
        f'{summary["eval_return_mean"]:.1f} |')
  lines += [
      '',
      'Quickstart, time to the first evaluation with mean return ≥ 475 (10 greedy episodes, every 10,240 env '
      'steps; seconds of training, evaluation excluded, graph tracing included): ' +
      ', '.join(f'seed {seed}: ' + (f'{steps:,} steps, {t:.1f} s' if t is not None else 'not reached')
                for seed, (steps, t) in zip(seeds, solve)) +
      (f'; median {_median(solved_times):.1f} s.' if solved_times else '.'),
      '',
      'Commands (one per run):',
  ]
  lines += [f'- `{summary["command"]}`' for summary in quickstarts + list(ataris.values())]
  return lines


def _rnd_section(rnds):
  """The report's RND overhead table, as lines."""
  overhead = 1.0 - _rate(rnds['rnd_32']) / _rate(rnds['ppo_32'])
  lines = [
      '',
      "## RND on Montezuma's Revenge (`gin/rnd_montezuma.gin` on ale-py's vector env, 128 steps per rollout, "
      'Nature CNN)',
      '',
      '| run | envs | env steps | training seconds | agent steps/s | frames/s | peak RSS |',
      '|---|---|---|---|---|---|---|',
  ]
  for name, label in (('ppo_32', 'PPO alone (the same configuration without RND)'), ('rnd_32', 'PPO + RND'),
                      ('rnd_128', 'PPO + RND')):
    summary = rnds[name]
    lines.append(f'| {label} | {name.split("_")[1]} | {summary["env_steps_this_run"]:,} | '
                 f'{summary["train_seconds_this_run"]:.1f} | {_rate(summary):,.0f} | {4 * _rate(summary):,.0f} | '
                 f'{summary["peak_rss_gib"]:.2f} GiB |')
  lines += [
      '',
      f'RND\'s throughput overhead over PPO alone at 32 envs: {100 * overhead:.0f}% (target ≤ 20%).',
      '',
      'Commands:',
  ]
  lines += [f'- `{summary["command"]}`' for summary in rnds.values()]
  return lines


def _compute_section(ataris, flops):
  """The report's learner-compute lines."""
  best_atari = max(_rate(summary) for summary in ataris.values())
  atari_learner_gflops = best_atari * 4 * flops['train_flops_per_sample'] / 1e9
  return [
      '',
      '## Learner compute (Nature CNN, batch 256, forward + backward + Adam)',
      '',
      f'- Isolated training step: {flops["samples_per_second"]:,.0f} samples/s = '
      f'{flops["gflops"]:,.0f} GFLOP/s ({flops["train_flops_per_sample"] / 1e6:.1f} MFLOP per sample: '
      f'3 × the forward pass, counted layer by layer).',
      f'- Compute ceiling, a 4096² float32 matmul: {flops["matmul_gflops"]:,.0f} GFLOP/s; the training '
      f'step reaches {100 * flops["gflops"] / flops["matmul_gflops"]:.0f}% of it.',
      f'- PPO trains on every transition 4 times (4 epochs), so a learner alone at the isolated rate could '
      f'consume at most {flops["samples_per_second"] / 4:,.0f} agent steps/s.',
      f'- The faster end-to-end ppo_atari run trained on {4 * best_atari:,.0f} samples/s = '
      f'{atari_learner_gflops:,.0f} GFLOP/s, {100 * atari_learner_gflops / flops["matmul_gflops"]:.0f}% of '
      'the matmul ceiling, while sharing the cores with the emulators and the actor.',
      '',
  ]


def _write_report(report: str) -> str:
  """Writes `report` to --output, keeping the sections below `KEEP_MARKER`; returns the path."""
  path = FLAGS.output if os.path.isabs(FLAGS.output) else os.path.join(REPO, FLAGS.output)
  # Sections below the marker (comparisons measured by hand against other libraries) are kept.
  kept = ''
  if os.path.exists(path):
    with open(path) as f:
      previous = f.read()
    if KEEP_MARKER in previous:
      kept = previous[previous.index(KEEP_MARKER):]
  with run_directory.atomic_file(path) as f:
    f.write(report + ('\n' + kept if kept else ''))
  return path


def main(argv):
  del argv
  started = datetime.datetime.now(datetime.timezone.utc)
  load = os.getloadavg()
  quick = FLAGS.quick
  print(f'Machine: {_machine()}; load average {load[0]:.2f} (1 min)', flush=True)
  if load[0] > 0.5:
    print('warning: the machine is busy; figures will be low.', flush=True)
  seeds, quickstarts, ataris, rnds = _training_runs(quick)
  print('Environment ceilings...', flush=True)
  cartpole = env_ceiling('CartPole-v1', 8, 200 if quick else 20_000)
  breakout = env_ceiling('ALE/Breakout-v5', 8, 20 if quick else 1_000)
  print('Learner FLOP/s...', flush=True)
  flops = learner_flops(steps=2 if quick else 10)
  lines = [
      '# Benchmarks',
      '',
      f'Produced by `make bench` (`python binaries/bench_main.py --output=BENCHMARKS.md'
      f'{" --quick" if quick else ""}`) on {started:%Y-%m-%d %H:%M} UTC.',
      f'Machine: {_machine()}. Load average when the run started: {load[0]:.2f}.',
      'Figures are medians of repeated runs within this one session; on a 2-core machine any other busy '
      'process lowers them.',
      '',
  ]
  lines += _end_to_end_section(seeds, quickstarts, ataris, cartpole, breakout)
  lines += _rnd_section(rnds)
  lines += _compute_section(ataris, flops)
  report = '\n'.join(lines)
  path = _write_report(report)
  print(report)
  print(f'Wrote {path}')


if __name__ == '__main__':
  app.run(main)
