"""Model architectures (registries in ``students.py``, one file per family), teachers and budget fitting."""

from edgekd.models import mlp, mobilenetv2, resnet_student, teacher_cnn, teacher_resnet  # noqa: F401 - each registers its architectures
