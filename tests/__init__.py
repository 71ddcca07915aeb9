"""Tests of twin-server."""
