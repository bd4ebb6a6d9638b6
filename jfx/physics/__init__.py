"""The differentiable forward model shared by every stage and by the simulator, and the
host-side rotation-scan geometry (:mod:`jfx.physics.rotation`)."""
