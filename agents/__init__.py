"""The Faust worker: thin agents that read an event, call a pure policy, and fire a trigger or
publish an event. Policies live in `agents.policies` (no I/O); side effects go through the
ports in `agents.ports`. May import `streams` and `triggers`, nothing else of loopline.
"""
