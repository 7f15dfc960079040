"""A local simulator of WaveSpeed's prediction API, for tests and the bot's dry-run mode.

Start it in-process with `run_simulator(...)`, or standalone with
`python -m services.simulator --port 8080`; any WaveSpeed client can then use its base URL.
"""

from .app import WaveSpeedSimulator, run_simulator
from .config import Fault, SimulatorConfig

__all__ = ["Fault", "SimulatorConfig", "WaveSpeedSimulator", "run_simulator"]
