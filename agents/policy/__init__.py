"""Pure decision policies of loopline (retrain, promotion, deploy); import from `agents.policies`."""
