"""Integration: summation-integrator settings."""

from jfx.integrate.settings import SummationIntegratorSettings as SummationIntegratorSettings
