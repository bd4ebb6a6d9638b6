"""The differentiable forward model shared by every stage and by the simulator."""
