"""The Envoy side of compile: the model's route tables and policies → the node proxy's EnvoyPlan.

This package imports none of its modules: compile's ``_plan`` imports the plan types
from :mod:`.plan`, while :mod:`.build` imports ``_plan``, so importing the builder here
would be circular.
"""
