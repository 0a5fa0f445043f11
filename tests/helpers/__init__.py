"""Helpers shared by the test modules (one place; test modules never import each other)."""
