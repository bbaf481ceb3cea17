"""`runtime.properties.read_only`: the one-line accessors the learners, teachers, environments and networks use."""

import pytest

from protege.agents.distillation import teachers
from protege.agents.learners import base
from protege.envs import deep_sea
from protege.runtime.properties import read_only


class _Holder:
  value = read_only('_value', 'The value given.')
  passed_through = read_only('_holder._value', 'The held holder\'s value.')

  def __init__(self, value, holder=None):
    self._value = value
    self._holder = holder


def test_read_only_returns_the_attribute_refuses_assignment_and_keeps_its_doc():
  holder = _Holder(3, holder=_Holder(5))
  assert holder.value == 3 and holder.passed_through == 5
  holder._value = 4
  assert holder.value == 4  # reads the attribute each time, not a copy made at construction
  with pytest.raises(AttributeError):
    holder.value = 1
  assert _Holder.value.__doc__ == 'The value given.'


def test_read_only_refuses_what_is_not_an_attribute_path():
  for bad in ('', '_a b', '_a..b', '1x', '_a.'):
    with pytest.raises(ValueError, match='attribute name'):
      read_only(bad, 'doc')


def test_the_library_accessors_are_documented_and_read_only():
  # The classes that declare their accessors with read_only: each is a property with a docstring, and the
  # learner's pass-through accessors carry the interface's own documentation.
  for cls, names in ((teachers.Teacher, ('name', 'source', 'kind', 'num_actions', 'state_spec', 'has_value')),
                     (deep_sea.DeepSeaVectorEnv, ('size', 'deterministic')),
                     (base.OnPolicyLearner, ('network', 'strategy', 'train_step', 'kickstarter')),
                     (base.LearnerWrapper, ('inner', 'network', 'strategy', 'train_step', 'kickstarter'))):
    for name in names:
      accessor = getattr(cls, name)
      assert isinstance(accessor, property) and accessor.fset is None, (cls, name)
      assert accessor.__doc__, (cls, name)
  assert base.LearnerWrapper.network.__doc__ == base.Learner.network.__doc__
  assert not getattr(base.OnPolicyLearner.network, '__isabstractmethod__', False)
