"""Tiny replicas of real VLM architectures for the real-model rehearsal (tests/test_zoo_*.py).

    from tests.zoo.builders import ARCHITECTURES, build
"""
