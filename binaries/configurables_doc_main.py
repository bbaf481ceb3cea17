r"""Writes `docs/configurables.md`: every gin configurable of Protégé, its parameters, defaults and documentation.

  python binaries/configurables_doc_main.py            # rewrites docs/configurables.md
  python binaries/configurables_doc_main.py --check    # exits 1 if the file is not current

The reference is generated from the code (gin's registry after importing every module of the package, the
signatures, and the `Args:` / `Attributes:` sections of the docstrings), so it cannot drift from it:
`tests/test_configurables_doc.py` fails when the file is not what this program writes.
"""

import importlib
import inspect
import os
import pkgutil
import re
import sys
from typing import Dict, List, Tuple

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import gin  # noqa: E402

import protege  # noqa: E402
from protege.replay import optional_reverb  # noqa: E402

flags.DEFINE_string('output', None, 'Where to write the reference; default: docs/configurables.md of the checkout.')
flags.DEFINE_bool('check', False, 'Write nothing; exit 1 (naming the file) if it is not current.')

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO, 'docs', 'configurables.md')
# The one module that imports dm-reverb.
REVERB_MODULE = 'protege.replay.reverb_replay'
_SECTION = re.compile(r'^(\s*)(Args|Arguments|Attributes):\s*$')
_ENTRY = re.compile(r'^(\w+(?:,\s*\w+)*)(?:\s*\([^)]*\))?:\s*(.*)$')


def _configurables() -> List[Tuple[str, object]]:
  """(gin name, configurable) of every configurable a module of the package registers, by module then name.
  The binaries are not imported: they define flags, and register no configurable of their own; nor is the
  Reverb transport where dm-reverb is not installed (it registers none: tests/test_configurables_doc.py)."""
  for module in pkgutil.walk_packages(protege.__path__, 'protege.'):
    if module.name.startswith('protege.binaries'):
      continue
    if module.name == REVERB_MODULE and not optional_reverb.installed():
      continue
    importlib.import_module(module.name)
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  found = [(configurable.name, configurable) for _, configurable in gin_config._REGISTRY.items()  # pylint: disable=protected-access
           if (configurable.module or '').startswith('protege.')]
  return sorted(found, key=lambda item: (item[1].module, item[0]))


def documented_parameters(docstring: str) -> Dict[str, str]:
  """{parameter: its description} from the `Args:` / `Attributes:` sections of a Google-style docstring
  (continuation lines joined; `a, b: text` documents both)."""
  documented, lines = {}, inspect.cleandoc(docstring or '').splitlines()
  index = 0
  while index < len(lines):
    header = _SECTION.match(lines[index])
    index += 1
    if not header:
      continue
    names, indent = None, None
    while index < len(lines) and (not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) >
                                  len(header.group(1))):
      line = lines[index]
      depth = len(line) - len(line.lstrip())
      entry = _ENTRY.match(line.strip())
      if line.strip() and (indent is None or depth == indent) and entry:
        indent, names = depth, [name.strip() for name in entry.group(1).split(',')]
        for name in names:
          documented[name] = entry.group(2).strip()
      elif line.strip() and names:
        for name in names:
          documented[name] = f'{documented[name]} {line.strip()}'.strip()
      index += 1
  return documented


def _default(value) -> str:
  if value is inspect.Parameter.empty:
    return 'required'
  if value is gin.REQUIRED:
    return 'required (gin)'
  if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismethod(value):
    return f'`@{getattr(value, "__name__", value)}`'
  text = repr(value)
  # An object without a readable repr (a sentinel) would make the file differ at every run.
  return '(an object: see the documentation)' if ' at 0x' in text else f'`{text}`'


def _section(name: str, configurable) -> List[str]:
  wrapped = configurable.wrapped
  docstrings = [inspect.getdoc(wrapped) or '']
  if inspect.isclass(wrapped):
    docstrings.append(inspect.getdoc(wrapped.__init__) or '')
  documented = {}
  for docstring in docstrings:
    documented.update({k: v for k, v in documented_parameters(docstring).items() if k not in documented})
  summary = docstrings[0].strip().split('\n\n')[0].replace('\n', ' ')
  lines = [f'### `{name}`', '', f'`{configurable.module}` — {summary}', '',
           '| parameter | default | documentation |', '|---|---|---|']
  denied = set(configurable.denylist or ())
  for parameter in inspect.signature(wrapped).parameters.values():
    if (parameter.name in ('self', 'args', 'kwargs') or parameter.name in denied or
        parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)):
      continue
    text = documented.get(parameter.name, '(undocumented)').replace('|', '\\|')
    lines.append(f'| `{parameter.name}` | {_default(parameter.default)} | {text} |')
  return lines + ['']


def reference() -> str:
  """The whole of `docs/configurables.md`, as this program writes it."""
  configurables = _configurables()
  lines = ['# Gin configurables', '',
           'Generated by `python binaries/configurables_doc_main.py` from the code (do not edit by hand; '
           '`tests/test_configurables_doc.py` checks that it is current). Each configurable is set in a gin file '
           'as `Name.parameter = value`; the documentation is the docstring\'s.', '']
  modules = {}
  for name, configurable in configurables:
    modules.setdefault(configurable.module, []).append(name)
  lines += [f'- `{module}`: ' + ', '.join(f'`{name}`' for name in names) for module, names in modules.items()]
  lines.append('')
  for name, configurable in configurables:
    lines += _section(name, configurable)
  return '\n'.join(lines).rstrip('\n') + '\n'


def main(argv):
  del argv
  path = FLAGS.output or DEFAULT_OUTPUT
  text = reference()
  if FLAGS.check:
    current = open(path).read() if os.path.exists(path) else None
    if current != text:
      print(f'{path} is not current: run python binaries/configurables_doc_main.py', file=sys.stderr)
      return 1
    return 0
  with open(path, 'w') as f:
    f.write(text)
  print(f'Wrote {path} ({text.count("### ")} configurables).')
  return 0


def run():
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
