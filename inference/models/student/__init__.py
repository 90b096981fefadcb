"""A light student network, distilled per shot from a corrected teacher (issue #10).

    from mattekit.inference.models.student import Student, StudentConfig
    pha = Student(StudentConfig.tiny())(src, ref)
"""
from mattekit.inference.models.student.model import Student, StudentConfig

__all__ = ["Student", "StudentConfig"]
