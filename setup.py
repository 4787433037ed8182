"""Ships `failcore.pth` into site-packages, for plain and editable installs alike.

The file turns the guard on at interpreter start-up when FAILCORE_POLICY is
set (see failcore/_startup.py); everything else is in pyproject.toml.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "failcore.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH), preserve_mode=0)


class EditableWheelWithPth(editable_wheel):
    def _create_wheel_file(self, bdist_wheel):
        from wheel.wheelfile import WheelFile

        path = super()._create_wheel_file(bdist_wheel)
        with WheelFile(path, "a") as wheel:
            wheel.write(PTH, PTH)
        return path


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
