"""Serving a family's members on demand (serving.store.ModelStore.admitted): a member is taken in
by its first request, loaded like any model, and never holds the replica's readiness."""

from __future__ import annotations

import asyncio

from serving.store import ModelStore


class Model:
    def __init__(self, name, version):
        self.name, self.version = name, version

    def predict(self, frame):
        return [self.version] * len(frame)


def store(resolve) -> ModelStore:
    return ModelStore({"clf": "champion"}, loader=Model, resolver=resolve, retry=(0.01, 0.02),
                      admit=lambda name: "prod" if name.startswith("churn.") else None)


async def until(predicate, what: str, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_a_member_is_taken_in_by_its_first_request_and_loaded():
    asked = []

    def resolve(name, alias):
        asked.append((name, alias))
        return "3"

    async def run():
        s = store(resolve)
        s.start()
        s.on_caught_up()
        await until(lambda: s.loaded("clf", "3"), "clf loaded")
        assert "churn.acme" not in s.models and s.admitted("nope") is None
        state = s.admitted("churn.acme")
        assert state is s.models["churn.acme"] and state.alias == "prod"
        await until(lambda: s.loaded("churn.acme", "3"), "the member loaded")
        assert s.admitted("churn.acme") is state                # once
        s.on_deployment("churn.acme", "4", "prod")                # then followed like the others
        await until(lambda: s.loaded("churn.acme", "4"), "the member's new champion")
        assert ("churn.acme", "prod") in asked and asked.count(("churn.acme", "prod")) == 1
        for task in list(s.tasks):
            task.cancel()
    asyncio.run(run())


def test_a_member_whose_registry_fails_does_not_fail_readiness():
    failures = []

    def resolve(name, alias):
        if name.startswith("churn."):
            failures.append(name)
            raise ConnectionError("registry down for this one")
        return "1"

    async def run():
        s = store(resolve)
        s.start()
        s.on_caught_up()
        await until(lambda: s.readiness()[0], "ready")
        s.admitted("churn.acme")
        await until(lambda: len(failures) >= 3, "three failed resolves of the member")
        assert s.readiness()[0] and not s.models["churn.acme"].asked
        for task in list(s.tasks):
            task.cancel()
        s.pool.shutdown(wait=False)
    asyncio.run(run())
