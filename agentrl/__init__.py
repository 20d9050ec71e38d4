"""agentrl: train and evaluate computer-use agents with reinforcement learning.

``import agentrl`` registers every bundled task with Gymnasium as ``agentrl/<task-id>``.
"""

__version__ = "0.1.0"

from agentrl.registration import register_bundled as _register_bundled

_register_bundled()
