"""A run's settings: gin files and bindings parsed strictly, every file and every value checked first.

`parse_gin` refuses, with a `ConfigError` of one line that names the path or the binding and the fix,
before any work starts:

* a gin file (given, or reached through `include`) that does not exist, is a directory or a device (such
  as /dev/null), cannot be read, or is empty: it holds no statement at all, only blank lines and comments.
  A file whose only statement is an `include` or an `import` is not empty: it names a configuration.
* an unknown configurable or parameter, a reference to an unknown configurable, a syntax error (gin's
  own checks, with `skip_unknown=False`);
* a value of the wrong type: every bound value is checked against the annotation of the parameter it
  binds (`check_binding_types`), e.g. `make_environment.num_envs = 'eight'` against `num_envs: int`.

This module sits below the agents: it imports none of them. Which configurables exist is the caller's
business; import the modules that define them (`from agents.training import trainer`) before
`parse_gin`, or strict parsing will call their names unknown.
"""

import collections.abc
from importlib import resources
import inspect
import logging
import math
import numbers
import os
import types
import typing
from typing import Any, List, Optional, Sequence

import gin
from gin import config_parser

from protege.runtime.errors import ConfigError

# The shipped gin/ folder (protege/gin in a wheel, the repository's gin/ in a checkout), searched after the
# working directory, so `include 'ppo_atari.gin'` and `--gin_file=quickstart.gin` work from anywhere.
GIN_DIR = str(resources.files('protege') / 'gin')


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Parses gin strictly and checks every file and value first (see the module docstring).

  An unknown configurable or parameter is an error, never silently skipped; the configuration is
  finalized (locked) once parsed. Raises `ConfigError` (one line naming the value and the fix).
  """
  if GIN_DIR not in _search_prefixes():
    gin.add_config_file_search_path(GIN_DIR)
  for path in gin_files:
    check_gin_file(path)
  # Bindings can include files too (`--gin_bindings="include 'x.gin'"`).
  _check_includes('\n'.join(gin_bindings), '--gin_bindings', set())
  # gin's resource reader first looks for every included file on the Python path and logs "ERROR Path not
  # found" when it is not there, before it finds the file on the search path: noise on the console of every
  # run whose gin file includes another. A missing file still raises (below).
  previous_disable = logging.root.manager.disable
  logging.disable(logging.ERROR)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings), skip_unknown=False,
                                        finalize_config=True)
  except (ValueError, KeyError, ImportError, SyntaxError, OSError) as error:
    # Some of gin's messages append the whole configuration; the part before it says what is wrong.
    message = ' '.join(str(error).split(' in config string:')[0].split())
    raise ConfigError(f'invalid gin configuration: {message} — check the spelling of the configurable '
                      f'and parameter names (they are documented in the docstrings of the functions '
                      f'and classes they configure).') from None
  finally:
    logging.disable(previous_disable)
  check_binding_types()


@gin.configurable
def tensorflow_threads(intra_op: int = 0, inter_op: int = 0) -> None:
  """Sizes TensorFlow's thread pools for the process (run mechanics; applied once gin is parsed).

  Small networks gain from `intra_op = 1, inter_op = 1`: every op then runs on one thread, and no step
  waits for another thread to wake up. On the 2-core machine of BENCHMARKS.md a woken thread answers
  only after ~60 µs, so each call of a compiled function costs ~0.5 ms of hand-overs; single-threaded
  TensorFlow made the quickstart's CartPole training ~15% faster. Large convolutional networks want
  every core (the defaults). It lives here, beside the parser, so that every process that parses a gin
  file (a binary, a PBT member) knows the name.

  Args:
    intra_op: threads one op (a matmul, a convolution) may use; 0 (default): TensorFlow's choice, one per
      core.
    inter_op: threads running independent ops at once; 0 (default): TensorFlow's choice.

  Raises:
    ConfigError: a negative count.
    RuntimeError: TensorFlow already ran an op with other pool sizes (a caller's mistake: apply it first).
  """
  for name, value in (('intra_op', intra_op), ('inter_op', inter_op)):
    if not isinstance(value, int) or value < 0:
      raise ConfigError(f'tensorflow_threads.{name} must be an int >= 0 (0: TensorFlow\'s choice), got '
                        f'{value!r}.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.config.threading.get_intra_op_parallelism_threads() == intra_op and \
      tf.config.threading.get_inter_op_parallelism_threads() == inter_op:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
  except RuntimeError as error:
    raise RuntimeError('tensorflow_threads must be applied before TensorFlow runs its first op; bind it in '
                       f'the gin file of a binary, not after the run started ({error}).') from None


def bound(selector: str, default: Any) -> Any:
  """The value the parsed gin binds to `selector` ('Configurable.parameter'), or `default` if none."""
  try:
    return gin.query_parameter(selector)
  except ValueError:
    return default


def check_number(name: str, value: Any, minimum: float, inclusive: bool = False, integer: bool = False,
                 meaning: str = '') -> None:
  """Raises ConfigError unless `value` is a finite number (an int if `integer`) above `minimum` (or equal
  to it, if `inclusive`): one line naming the setting, its value and the fix.

  Args:
    name: the setting as the user writes it: a gin parameter ('PPOLearner.learning_rate') or a flag
      ('--keep_checkpoints').
    value: its value.
    minimum: the bound.
    inclusive: whether `minimum` itself is allowed.
    integer: whether it must be an int (a bool is not one).
    meaning: what the setting is, for the message, e.g. 'seconds between checkpoints'.
  """
  is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if is_number and (not integer or isinstance(value, numbers.Integral)) and math.isfinite(value) and (
      value >= minimum if inclusive else value > minimum):
    return
  fix = f'pass another {name}' if name.startswith('--') else 'fix it in the gin file or --gin_bindings'
  bound = f'{">=" if inclusive else ">"} {minimum:g}'
  raise ConfigError(f'{name} must be {"an int" if integer else "a number"} {bound}'
                    f'{f" ({meaning})" if meaning else ""}, got {value!r}; {fix}.')


# --- the files ----------------------------------------------------------------------------------------


def _search_prefixes() -> List[str]:
  # gin's internal list of the folders `parse_config_file` searches, in order ('' first: the working
  # directory); gin-config is pinned at 0.5.0 in requirements.txt.
  return list(gin.config._LOCATION_PREFIXES)  # pylint: disable=protected-access


def find_gin_file(path: str) -> Optional[str]:
  """The file gin opens for `path` (searching the working directory, then gin/), or None if none exists.

  Like gin, a regular file wins; failing one, the first thing of that name (a directory, a device) is
  returned, so that the caller can say what it is.
  """
  prefixes = [''] if os.path.isabs(path) else _search_prefixes() + [GIN_DIR]
  candidates = [os.path.join(prefix, path) for prefix in prefixes]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  for candidate in candidates:
    if os.path.lexists(candidate):
      return candidate
  return None


def resolve_gin_file(path: str) -> str:
  """The absolute path of the gin file `path` names (see `find_gin_file`); ConfigError if there is none."""
  found = find_gin_file(path)
  if found is None:
    raise ConfigError(f"gin file '{path}' does not exist; the shipped configurations are in {GIN_DIR}.")
  return os.path.abspath(found)


def _read_text(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def check_gin_file(path: str, included_by: Optional[str] = None, checked: Optional[set] = None) -> None:
  """Raises ConfigError unless `path` and every file it includes is a readable, non-empty gin file.

  `included_by` names where `path` was included (for the message); `checked` holds the real paths
  already checked, so that a file included twice is read once and an include cycle ends.
  """
  checked = set() if checked is None else checked
  where = f' (included by {included_by})' if included_by else ''
  found = find_gin_file(path)
  if found is None:
    raise ConfigError(f"gin file '{path}'{where} does not exist; the shipped configurations are in "
                      f'{GIN_DIR}.')
  if os.path.realpath(found) in checked:
    return  # already checked (a file included twice, or an include cycle, which gin reports itself)
  checked.add(os.path.realpath(found))
  if os.path.isdir(found):
    raise ConfigError(f"gin file '{path}'{where} is a directory; pass a .gin file, e.g. one of those in "
                      f'{GIN_DIR}.')
  if not os.path.isfile(found):
    raise ConfigError(f"gin file '{path}'{where} is not a regular file (a device, a pipe or a broken "
                      'link); pass a .gin file.')
  try:
    text = _read_text(found)
  except PermissionError:
    raise ConfigError(f"gin file '{path}'{where} cannot be read (permission denied); make it readable "
                      '(chmod a+r) or pass a copy you can read.') from None
  except OSError as error:
    raise ConfigError(f"gin file '{path}'{where} cannot be read ({error.strerror or error}); pass a "
                      'readable .gin file.') from None
  except UnicodeDecodeError:
    raise ConfigError(f"gin file '{path}'{where} is not a text file (not UTF-8); pass a .gin file.") from None
  statements = _check_includes(text, f"'{path}'", checked)
  if statements == 0:
    raise ConfigError(f"gin file '{path}'{where} is empty (no binding, include or import, only comments or "
                      'blank lines); pass the configuration to run, e.g. one of those in '
                      f'{GIN_DIR}.')


class _StatementsOnly(config_parser.ParserDelegate):
  """Lets gin's parser read a file's statements without resolving references or macros: only its
  includes are needed here, and the names they use are checked when gin parses the file for real."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return None

  def macro(self, macro_name):
    return None


def _check_includes(text: str, source: str, checked: set) -> Optional[int]:
  """Checks every file `text` (from `source`) includes, recursively; returns its number of statements,
  or None if it has a syntax error (which gin then reports, with its location)."""
  statements = 0
  includes = []
  try:
    for statement in config_parser.ConfigParser(text, _StatementsOnly()):
      statements += 1
      if isinstance(statement, config_parser.IncludeStatement):
        includes.append(statement.filename)
  except SyntaxError:
    return None
  for included in includes:
    check_gin_file(included, included_by=source, checked=checked)
  return statements


# --- the values ---------------------------------------------------------------------------------------

# gin's internals, read (never changed) to check the parsed values; gin-config is pinned at 0.5.0 in
# requirements.txt. `_CONFIG` maps (scope, selector) to {parameter: bound value}; `_REGISTRY` maps a
# selector to its `Configurable` (the wrapped function or class); macros are bound as
# `<NAME>/gin.macro.value`, and `%NAME` is an evaluated reference to `gin.macro` in scope NAME.
_UNKNOWN = object()  # a value that cannot be known before the run (an unbound macro, ...): not checked
_NO_DEFAULT = object()


def check_binding_types() -> None:
  """Checks every bound gin value against the annotation of the parameter it binds.

  Raises ConfigError for the first value that cannot be of the annotated type, e.g.
  `make_environment.num_envs = 'eight' is a str; it must be an int`. The rules (`conforms`): an int is a
  fine float, a bool is not an int, a list and a tuple are both fine sequences, `None` is fine where it is
  the parameter's default, a reference `@name` is a callable, `@name()` of a class is an instance of it.
  Unannotated parameters, `Any`, and what cannot be known before the run (the result of calling a
  function, an unbound macro) are not checked.
  """
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  for (scope, selector), bindings in sorted(gin.config._CONFIG.items()):  # pylint: disable=protected-access
    configurable = registry.get(selector)
    if configurable is None or configurable.wrapped is gin.config.macro:
      continue
    parameters = _annotated_parameters(configurable.wrapped)
    for name, value in sorted(bindings.items()):
      if name not in parameters:
        continue
      annotation, default = parameters[name]
      if value is None and default is None:
        continue  # the parameter's own default: the code takes it
      if not conforms(value, annotation):
        key = f"{scope + '/' if scope else ''}{registry.minimal_selector(selector)}.{name}"
        what = 'None' if _resolve(value) is None else f'{_show(value)} is {_what(value)}'
        raise ConfigError(f'{key} = {what}; it must be {describe(annotation)}. Fix the gin file or '
                          '--gin_bindings that set it.')


def _annotated_parameters(fn_or_cls) -> dict:
  """{name: (annotation, default)} of the annotated parameters of a function, or of a class's constructor."""
  target = fn_or_cls
  if inspect.isclass(fn_or_cls):
    target = None
    for base in inspect.getmro(fn_or_cls):  # the constructor gin calls: the first __init__ or __new__
      if '__init__' in vars(base) or '__new__' in vars(base):
        target = base.__init__ if '__init__' in vars(base) else base.__new__
        break
  if target is None:
    return {}
  target = inspect.unwrap(target)
  try:
    signature = inspect.signature(target)
  except (TypeError, ValueError):
    return {}
  try:
    hints = typing.get_type_hints(target)
  except Exception:  # pylint: disable=broad-except  (a forward reference that does not resolve, ...)
    hints = {}
  result = {}
  for name, parameter in signature.parameters.items():
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
      continue
    annotation = hints.get(name, parameter.annotation)
    if annotation is parameter.empty or isinstance(annotation, str):
      continue  # unannotated, or an annotation that did not resolve
    default = _NO_DEFAULT if parameter.default is parameter.empty else parameter.default
    result[name] = (annotation, default)
  return result


def _resolve(value: Any, depth: int = 0) -> Any:
  """`value` with a macro (`%NAME`) or constant replaced by what it stands for; _UNKNOWN if it is unbound."""
  if not isinstance(value, gin.config.ConfigurableReference) or not value.evaluate:
    return value
  wrapped = value.configurable.wrapped
  if wrapped is gin.config.macro:
    config = gin.config._CONFIG  # pylint: disable=protected-access
    bound = config.get(('/'.join(value.scopes), 'gin.macro'), {})
    if 'value' not in bound or depth > 20:
      return _UNKNOWN
    return _resolve(bound['value'], depth + 1)
  if wrapped is gin.config._retrieve_constant:  # pylint: disable=protected-access
    try:
      constant = value.scoped_configurable_fn()
    except Exception:  # pylint: disable=broad-except
      return _UNKNOWN
    return _UNKNOWN if constant is gin.REQUIRED else constant
  return value


def _is_union(annotation) -> bool:
  return typing.get_origin(annotation) in (typing.Union, types.UnionType)


_SEQUENCE_ORIGINS = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence,
                     collections.abc.Collection, collections.abc.Iterable)
_MAPPING_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _origin(annotation):
  """The runtime class behind an annotation: `list` for List[int] and list, `Callable` for Callable[...]."""
  origin = typing.get_origin(annotation)
  return origin if origin is not None else annotation


def _accepts_literals(cls) -> bool:
  # NumPy and TensorFlow types take Python literals where they are used (a list is a fine array, a number
  # a fine tensor, 'float32' a fine dtype).
  return getattr(cls, '__module__', '').split('.')[0] in ('numpy', 'tensorflow', 'keras', 'tf_keras')


def conforms(value: Any, annotation: Any) -> bool:
  """Whether a parsed gin value can be of type `annotation` (see `check_binding_types` for the rules)."""
  value = _resolve(value)
  if value is _UNKNOWN or annotation in (Any, object, inspect.Parameter.empty) or isinstance(
      annotation, (typing.TypeVar, str)):
    return True
  if _is_union(annotation):
    return any(conforms(value, member) for member in typing.get_args(annotation))
  if isinstance(value, gin.config.ConfigurableReference):
    return _reference_conforms(value, annotation)
  if not isinstance(value, (bool, int, float, complex, str, bytes, list, tuple, dict, type(None))):
    return True  # not a gin literal (an unknown reference skipped by gin, ...): nothing to check
  origin, args = _origin(annotation), typing.get_args(annotation)
  if annotation is None or annotation is type(None):
    return value is None
  if origin is typing.Literal:
    return value in args
  if annotation is bool:
    return isinstance(value, bool)
  if annotation is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if annotation is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if origin in _SEQUENCE_ORIGINS:
    if isinstance(value, str):
      # A str is a sequence of str (Python's typing agrees), never a list or a tuple.
      return origin not in (list, tuple) and all(arg in (str, Any) for arg in args)
    if not isinstance(value, (list, tuple)):
      return False
    if origin is tuple and args and args[-1] is not Ellipsis:
      return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
    return not args or all(conforms(item, args[0]) for item in value)
  if origin in _MAPPING_ORIGINS:
    if not isinstance(value, dict):
      return False
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    return all(conforms(k, key_type) and conforms(v, value_type) for k, v in value.items())
  if origin is collections.abc.Callable:
    return callable(value)
  if origin is type:
    return False  # a literal is never a class; a reference `@name` is checked above
  if inspect.isclass(origin):
    return isinstance(value, origin) or _accepts_literals(origin)
  return True  # an annotation this checker does not know: not checked


def _reference_conforms(reference, annotation) -> bool:
  """`@name` is the configurable itself (a callable); `@name()` is what calling it returns: an instance of
  it for a class, unknown before the run for a function."""
  origin = _origin(annotation)
  referenced = reference.configurable.wrapped
  if not reference.evaluate:
    return origin in (collections.abc.Callable, type) or (
        inspect.isclass(origin) and _accepts_literals(origin))
  if not inspect.isclass(referenced):
    return True  # a function's result: known only once it runs
  if origin is collections.abc.Callable:
    return any('__call__' in vars(base) for base in inspect.getmro(referenced))
  if origin is typing.Literal or origin is type:
    return False
  if inspect.isclass(origin):
    try:
      return issubclass(referenced, origin) or _accepts_literals(origin)
    except TypeError:
      return True
  return True


def _article(noun: str) -> str:
  return ('an ' if noun[:1].lower() in 'aeiou' else 'a ') + noun


def _name(annotation) -> str:
  """A short name of a type for messages: 'int', 'TeacherSet', 'Sequence[str]'."""
  if annotation is type(None) or annotation is None:
    return 'None'
  if _is_union(annotation):
    return ' or '.join(_name(member) for member in typing.get_args(annotation))
  args = typing.get_args(annotation)
  origin = typing.get_origin(annotation)
  if origin is not None:
    base = getattr(origin, '__name__', str(origin))
    if base == 'Callable':
      return 'callable'
    shown = ', '.join('...' if arg is Ellipsis else _name(arg) for arg in args)
    return f'{base}[{shown}]' if shown else base
  return getattr(annotation, '__name__', str(annotation).replace('typing.', ''))


def describe(annotation) -> str:
  """What a value of type `annotation` is, for a message: 'an int', 'a float or None', ..."""
  if _is_union(annotation):
    members = list(typing.get_args(annotation))
    has_none = type(None) in members
    members = [m for m in members if m is not type(None)]
    text = ' or '.join(describe(member) for member in members)
    return text + ' or None' if has_none else text
  origin, args = _origin(annotation), typing.get_args(annotation)
  if annotation is None or annotation is type(None):
    return 'None'
  if annotation is bool:
    return 'a bool (True or False)'
  if annotation is float:
    return 'a float (a number)'
  if annotation is str:
    return "a str (in quotes, e.g. 'name')"
  if annotation in (int, complex, bytes):
    return _article(annotation.__name__)
  if origin is typing.Literal:
    return 'one of ' + ', '.join(repr(arg) for arg in args)
  if origin in _SEQUENCE_ORIGINS:
    if origin is tuple and args and args[-1] is not Ellipsis:
      return f'a tuple of {len(args)} ({", ".join(_name(arg) for arg in args)})'
    return 'a list or tuple' + (f' of {_name(args[0])}' if args else '')
  if origin in _MAPPING_ORIGINS:
    return 'a dict' + (f' of {_name(args[0])} to {_name(args[1])}' if len(args) == 2 else '')
  if origin is collections.abc.Callable:
    return 'a callable (a reference such as @name)'
  if origin is type:
    return 'a class (a reference such as @name)'
  if inspect.isclass(origin):
    name = _gin_name(origin)
    return _article(origin.__name__) + (f' (a reference such as @{name}())' if name else '')
  return _article(_name(annotation))


def _gin_name(cls) -> Optional[str]:
  """The name `cls` is registered under with gin, if it is."""
  for _, configurable in gin.config._REGISTRY.items():  # pylint: disable=protected-access
    if configurable.wrapped is cls:
      return configurable.name
  return None


def _show(value) -> str:
  resolved = _resolve(value)
  if resolved is not value and resolved is not _UNKNOWN:
    return f'{value!r} ({resolved!r})'  # a macro, with what it stands for
  return repr(value)


def _what(value) -> str:
  """What a parsed gin value is, for a message: 'a str', 'a reference to train (a callable)', ..."""
  value = _resolve(value)
  if isinstance(value, gin.config.ConfigurableReference):
    referenced = value.configurable.wrapped
    if not value.evaluate:
      return f'a reference to {value.selector} (a {"class" if inspect.isclass(referenced) else "callable"})'
    if inspect.isclass(referenced):
      return _article(referenced.__name__)  # an instance of the class
    return f'the result of {value.selector}()'
  if value is None:
    return 'None'
  return _article(type(value).__name__)

