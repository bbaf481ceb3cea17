"""The limits the code keeps so that a newcomer finds their way: file and function sizes, imports only down the
layers, no import circles.

The layers, lowest first (a module may import its own layer and those below, never one above):

  runtime  <  envs, networks, replay  <  agents.learners  <  agents.distillation  <  agents.training
           <  agents.data_free  <  studies  <  pbt  <  binaries, launch

Imports inside functions count too: a deferred import up the layers is still a dependency up the layers.
"""

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = (('runtime',), ('envs', 'networks', 'replay'), ('agents.learners',), ('agents.distillation',),
          ('agents.training',), ('agents.data_free',), ('studies',), ('pbt',), ('binaries', 'launch'))
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules():
  """{dotted module name: path} of every product module (the packages of `LAYERS`, and `agents` itself)."""
  modules = {}
  for top in sorted({name.split('.')[0] for layer in LAYERS for name in layer}):
    for path in glob.glob(os.path.join(REPO, top, '**', '*.py'), recursive=True):
      name = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
      modules[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
  return modules


def _layer(module: str) -> int:
  for rank, layer in enumerate(LAYERS):
    if any(module == package or module.startswith(package + '.') for package in layer):
      return rank
  raise AssertionError(f'{module} is in no layer of tests/test_structure.py: add its package to LAYERS.')


def _imports(path: str, modules) -> set:
  """The product modules `path` imports (anywhere in it), each resolved to the longest known module name."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    else:
      continue
    for name in (name.removeprefix('protege.') for name in names):
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name:
        found.add(name)
  return found


def test_no_product_file_is_longer_than_the_limit():
  long_files = {os.path.relpath(path, REPO): lines for path in _modules().values()
                if (lines := open(path).read().count('\n')) > MAX_FILE_LINES}
  assert not long_files, f'files over {MAX_FILE_LINES} lines (split them by concern): {long_files}'


def test_no_product_function_is_longer_than_the_limit():
  long_functions = {}
  for path in _modules().values():
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          long_functions[f'{os.path.relpath(path, REPO)}:{node.lineno} {node.name}'] = lines
  assert not long_functions, f'functions over {MAX_FUNCTION_LINES} lines: {long_functions}'


def test_agents_holds_only_its_sub_packages():
  modules = _modules()
  loose = sorted(name for name in modules if name.count('.') == 1 and name.startswith('agents.')
                 and not any(name == package for layer in LAYERS for package in layer))
  assert not loose, f'modules directly in agents/ (put each in the sub-package of its concern): {loose}'


def test_imports_go_down_the_layers_only():
  modules = _modules()
  upward = []
  for name, path in modules.items():
    if name == 'agents':
      continue
    for imported in _imports(path, modules):
      if imported != 'agents' and _layer(imported) > _layer(name):
        upward.append(f'{name} imports {imported}')
  assert not upward, f'imports up the layers (see the module docstring): {sorted(upward)}'


def test_no_import_circles():
  modules = _modules()
  graph = {name: {m for m in _imports(path, modules) if m != name and not name.startswith(m + '.')}
           for name, path in modules.items()}
  # Tarjan's strongly connected components; a component of more than one module is a circle.
  index, low, stack, on_stack, circles = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for successor in graph[node]:
      if successor not in index:
        visit(successor)
        low[node] = min(low[node], low[successor])
      elif successor in on_stack:
        low[node] = min(low[node], index[successor])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        circles.append(sorted(component))

  for node in graph:
    if node not in index:
      visit(node)
  assert not circles, f'modules that import each other, directly or through others: {circles}'
