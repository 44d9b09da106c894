"""Shared by the tests, the bench and the local twin (DESIGN.md "testkit/")."""
