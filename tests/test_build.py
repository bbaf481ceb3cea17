"""BUILD describes the real files: every source exists, every module and every test file has a target."""

import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('agents', 'networks', 'replay', 'envs', 'binaries', 'pbt', 'runtime', 'studies')


def _targets():
  """Evaluates BUILD with the py_* rules recording their arguments (Bazel's BUILD language is Starlark)."""
  targets = []

  def rule(kind):
    def record(**kwargs):
      targets.append(dict(kwargs, kind=kind))
    return record

  def glob_(patterns, exclude=()):
    found = {os.path.relpath(p, REPO) for pattern in patterns for p in glob.glob(os.path.join(REPO, pattern))}
    return sorted(found - set(exclude))

  namespace = {'py_library': rule('py_library'), 'py_binary': rule('py_binary'), 'py_test': rule('py_test'),
               'glob': glob_, 'package': lambda **kwargs: None}
  with open(os.path.join(REPO, 'BUILD')) as f:
    exec(compile(f.read(), 'BUILD', 'exec'), namespace)  # pylint: disable=exec-used
  return targets


def test_every_source_exists_and_names_are_unique():
  targets = _targets()
  names = [t['name'] for t in targets]
  assert len(names) == len(set(names)), names
  missing = [(t['name'], src) for t in targets for src in t.get('srcs', [])
             if not os.path.isfile(os.path.join(REPO, src))]
  assert not missing, f'BUILD lists sources that do not exist: {missing}'


def test_every_dependency_is_a_target():
  targets = _targets()
  names = {t['name'] for t in targets}
  bad = [(t['name'], dep) for t in targets for dep in t.get('deps', []) + t.get('data', [])
         if dep.startswith(':') and dep[1:] not in names]
  assert not bad, f'BUILD depends on targets it does not define: {bad}'


def test_every_module_and_test_file_has_a_target():
  targets = _targets()
  listed = {src for t in targets for src in t.get('srcs', [])}
  modules = {os.path.relpath(p, REPO) for package in PACKAGES
             for p in glob.glob(os.path.join(REPO, package, '**', '*.py'), recursive=True)}
  assert modules - listed == set(), f'modules without a BUILD target: {sorted(modules - listed)}'
  test_files = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'tests', 'test_*.py'))}
  tested = {src for t in targets if t['kind'] == 'py_test' for src in t['srcs']}
  assert test_files - tested == set(), f'test files without a py_test: {sorted(test_files - tested)}'
  binaries = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'binaries', '*_main.py'))}
  binary_srcs = {src for t in targets if t['kind'] == 'py_binary' for src in t['srcs']}
  assert binaries - binary_srcs == set(), f'binaries without a py_binary: {sorted(binaries - binary_srcs)}'
