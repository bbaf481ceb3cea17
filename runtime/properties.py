"""Read-only accessors in one line.

Many of Protégé's classes expose what they were built with (a teacher's specs, an environment's size, a
learner's network) as documented read-only properties. Written out, each is four lines of the same shape; with
`read_only` it is one line that names the attribute and documents it:

    class Teacher(tf.Module):
      source = read_only('_source', 'The path (or a description) the teacher was loaded from.')

`help()`, IDEs and Sphinx show the docstring as they do a `@property`'s. Properties that compute something
stay `@property` methods.
"""

import operator


def read_only(attribute: str, doc: str) -> property:
  """A property that returns `self.<attribute>` and cannot be set; `doc` is its docstring.

  `attribute` may be dotted (`'_inner.network'`) for a property that passes through to a wrapped object's.
  """
  if not all(part.isidentifier() for part in attribute.split('.')):
    raise ValueError(f'read_only needs an attribute name or a dotted path of them, got {attribute!r}.')
  return property(operator.attrgetter(attribute), doc=doc)
