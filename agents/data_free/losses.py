"""The data-free losses: pure functions, tensors in, scalar tensors out.

The generator's terms (DAFL, Chen et al. 2019, arXiv 1904.01186, and the Generative Adversarial
Simulator's adversarial term), their weighted sum `generator_loss`, and the student's distillation loss
`student_loss`. Layouts: logits `[B, A]`, features `[B, F]`.
"""

import math
from typing import Dict, Tuple

import tensorflow as tf

from protege.agents.distillation import losses as distillation_losses


def _logits(x, name):
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f'{name} must be a float tensor, got dtype {x.dtype.name}.')
  if x.shape.rank != 2:
    raise ValueError(f'{name} must be logits [B, A], got shape {x.shape}.')
  return x


def _same_shape(x, x_name, reference, reference_name):
  if not x.shape.is_compatible_with(reference.shape):
    raise ValueError(f'{x_name} has shape {x.shape} but {reference_name} has shape {reference.shape}; they '
                     'must match.')


def one_hot_loss(teacher_logits) -> tf.Tensor:
  """DAFL's one-hot loss: the mean cross-entropy of the teacher against its own argmax (DAFL eq. 3).

  L_oh = (1/B) Σ_i H×(onehot(argmax_a t_ia)‖softmax(t_i)) = (1/B) Σ_i (logsumexp_a t_ia − max_a t_ia).
  Low when the teacher is confident on the generated inputs.

  Args:
    teacher_logits: float `[B, A]`, the teacher's logits on generated observations (not stopped: the
      generator's gradient flows through them).

  Returns:
    A float scalar.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  return tf.reduce_mean(tf.reduce_logsumexp(teacher_logits, axis=-1) - tf.reduce_max(teacher_logits, axis=-1))


def information_entropy_loss(teacher_logits) -> tf.Tensor:
  """DAFL's information-entropy loss: minus the entropy of the batch-mean prediction (DAFL eq. 6).

  L_ie = Σ_a p̄_a log p̄_a = −H(p̄),  p̄ = (1/B) Σ_i softmax(t_i),  in nats. Minimal (−log A) when the batch
  covers the A classes equally. (DAFL's code uses log10: its weight β equals β / ln 10 here.)

  Args:
    teacher_logits: float `[B, A]`.

  Returns:
    A float scalar in [−log A, 0].
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  mean_probs = tf.reduce_mean(tf.nn.softmax(teacher_logits, axis=-1), axis=0)
  return tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(mean_probs), mean_probs))


def activation_loss(teacher_features) -> tf.Tensor:
  """DAFL's activation loss: minus the mean absolute penultimate feature of the teacher (DAFL eq. 4).

  L_a = −(1/(B·F)) Σ_i Σ_j |f_ij| (DAFL's paper writes the L1 norm per sample, its code the mean over the
  F features, which only rescales the weight; this is the code's).

  Args:
    teacher_features: float `[B, F]` (or `[B, ...]`, flattened), the teacher's features before its last
      layer on generated observations.

  Returns:
    A float scalar ≤ 0.
  """
  teacher_features = tf.convert_to_tensor(teacher_features)
  if not teacher_features.dtype.is_floating or teacher_features.shape.rank is None or \
      teacher_features.shape.rank < 2:
    raise ValueError(f'teacher_features must be float features [B, F], got shape {teacher_features.shape} '
                     f'and dtype {teacher_features.dtype.name}.')
  return -tf.reduce_mean(tf.abs(teacher_features))


def teacher_student_kl(teacher_logits, student_logits) -> tf.Tensor:
  """KL(T‖S) = Σ_a p_T(a) (log p_T(a) − log p_S(a)) per row, `[B]` (0 where they agree, never negative).

  Args:
    teacher_logits: float `[B, A]`.
    student_logits: float `[B, A]`, same shape.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  student_logits = _logits(student_logits, 'student_logits')
  _same_shape(student_logits, 'student_logits', teacher_logits, 'teacher_logits')
  return (distillation_losses.cross_entropy(teacher_logits, student_logits)
          - distillation_losses.cross_entropy(teacher_logits, teacher_logits))


def adversarial_loss(teacher_logits, student_logits) -> tf.Tensor:
  """The generator's adversarial term: L_adv = −(1/B) Σ_i KL(T(x_i)‖S(x_i)).

  Minimising it moves the generator towards inputs where the student disagrees with the teacher (the
  Generative Adversarial Simulator's adversarial loss; ZSKT/DFAD's teacher-student divergence). Gradients
  flow into both logits; the student's update uses `student_loss` instead.

  Returns:
    A float scalar ≤ 0.
  """
  return -tf.reduce_mean(teacher_student_kl(teacher_logits, student_logits))


def student_loss(teacher_logits, student_logits) -> tf.Tensor:
  """The student's distillation loss: (1/B) Σ_i H×(T(x_i)‖S(x_i)), the teacher's logits stopped.

  The cross-entropy of `agents.distillation.losses.cross_entropy` (the teacher_distill loss of Distilling
  Policy Distillation on generated states); it differs from the KL by the teacher's entropy, a constant
  for the student.

  Returns:
    A float scalar.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  student_logits = _logits(student_logits, 'student_logits')
  _same_shape(student_logits, 'student_logits', teacher_logits, 'teacher_logits')
  return tf.reduce_mean(distillation_losses.cross_entropy(tf.stop_gradient(teacher_logits), student_logits))


def generator_loss(teacher_logits, student_logits=None, teacher_features=None, one_hot_weight=1.0,
                   information_entropy_weight=5.0 / math.log(10.0), activation_weight=0.1,
                   adversarial_weight=0.0) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """The generator's loss w_oh·L_oh + w_ie·L_ie + w_a·L_a + w_adv·L_adv and its terms.

  Args:
    teacher_logits: float `[B, A]` on the generated observations.
    student_logits: float `[B, A]` on the same observations; needed when `adversarial_weight` is not the
      Python number 0.
    teacher_features: float `[B, F]`, the teacher's penultimate features; None drops the activation term
      (its weight must then be the Python number 0).
    one_hot_weight: w_oh ≥ 0 (a number, or a scalar tensor/variable read when the step runs). Default 1,
      DAFL's.
    information_entropy_weight: w_ie ≥ 0. Default 5 / ln 10 ≈ 2.17: DAFL's β = 5 on its log10 entropy.
    activation_weight: w_a ≥ 0. Default 0.1, DAFL's α for MNIST.
    adversarial_weight: w_adv ≥ 0. Default 0 (DAFL has none).

  Returns:
    `(loss, metrics)`: a float scalar and a dict of the unweighted terms ('one_hot', 'information_entropy',
    'activation', 'adversarial'; a term not computed is 0).

  Raises:
    ValueError: If a term with a non-zero Python weight lacks its input.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  dtype = teacher_logits.dtype
  zero = tf.zeros([], dtype)
  if teacher_features is None and not _is_zero(activation_weight):
    raise ValueError(f'activation_weight={activation_weight!r} needs teacher_features; pass them or set the '
                     'activation weight to 0.')
  if student_logits is None and not _is_zero(adversarial_weight):
    raise ValueError(f'adversarial_weight={adversarial_weight!r} needs student_logits; pass them or set the '
                     'adversarial weight to 0.')
  terms = {
      'one_hot': one_hot_loss(teacher_logits),
      'information_entropy': information_entropy_loss(teacher_logits),
      'activation': zero if teacher_features is None else tf.cast(activation_loss(teacher_features), dtype),
      'adversarial': zero if student_logits is None else adversarial_loss(teacher_logits, student_logits),
  }
  weights = {'one_hot': one_hot_weight, 'information_entropy': information_entropy_weight,
             'activation': activation_weight, 'adversarial': adversarial_weight}
  loss = tf.add_n([tf.cast(weights[key], dtype) * terms[key] for key in terms])
  return loss, terms


def _is_zero(value) -> bool:
  return isinstance(value, (int, float)) and value == 0
