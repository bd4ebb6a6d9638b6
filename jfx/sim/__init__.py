"""Physical, differentiable JAX simulator of Jungfraujoch rotation and serial data.

Modules: :mod:`structure` (|F|² from random atoms or a model), :mod:`detector` (JUNGFRAU
layouts), :mod:`forward` (the differentiable image model), :mod:`presets`, :mod:`simulate`
(orchestration, streaming frames), :mod:`cli` (``jfx-simulate``).
"""
