"""Reliability and security: a catalogue of bad inputs and faults, one test per case (docs/reliability.md)."""
