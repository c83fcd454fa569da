"""The bus contract of loopline: everything two processes must agree on to talk over Kafka.

The CloudEvents envelope, the typed data of each event type, the topic specs, the codec, the
dead-letter record, a publisher, topic admin and the embedded broker. This package imports
nothing else of loopline, so any producer (a job, a CLI, another team's service) can depend on
it alone.
"""

from streams.envelope import CloudEvent, new_event
from streams.events import EVENT_TYPES, EventData

__all__ = ["CloudEvent", "new_event", "EVENT_TYPES", "EventData"]
