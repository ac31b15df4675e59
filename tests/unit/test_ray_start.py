"""Starting a local Ray cluster on a busy machine: Ray's node start-up wait is fixed at 30 s, so a timed-out start
is tried again (a fake Ray module: no cluster is started here)."""
from __future__ import annotations

import pytest

import memla_utils.executors_ray as executors_ray
from memla_utils.executors_ray import RayConfig, init_ray

TIMEOUT = ("The current node timed out during startup. This could happen because some of the raylet failed to "
           "startup or the GCS has become overloaded.")


class FakeRay:
    def __init__(self, failures: int, message: str = TIMEOUT) -> None:
        self.failures, self.message, self.inits, self.shutdowns = failures, message, 0, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception(self.message)  # what ray/_private/node.py raises

    def shutdown(self) -> None:
        self.shutdowns += 1

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}


def test_a_timed_out_local_start_is_tried_again(monkeypatch):
    fake = FakeRay(failures=2)
    monkeypatch.setattr(executors_ray, "_ray", lambda: fake)
    assert init_ray(RayConfig(num_cpus=2)) is fake
    assert (fake.inits, fake.shutdowns) == (3, 2)


def test_other_errors_and_the_last_attempt_are_raised(monkeypatch):
    fake = FakeRay(failures=3)
    monkeypatch.setattr(executors_ray, "_ray", lambda: fake)
    with pytest.raises(Exception, match="timed out during startup"):
        init_ray(RayConfig(num_cpus=2, start_attempts=3))
    assert fake.inits == 3
    other = FakeRay(failures=1, message="permission denied")
    monkeypatch.setattr(executors_ray, "_ray", lambda: other)
    with pytest.raises(Exception, match="permission denied"):
        init_ray(RayConfig(num_cpus=2))
    assert other.inits == 1
    joining = FakeRay(failures=1)  # joining a running cluster: nothing of ours to restart
    monkeypatch.setattr(executors_ray, "_ray", lambda: joining)
    with pytest.raises(Exception, match="timed out"):
        init_ray(RayConfig(address="auto"))
    assert joining.inits == 1
