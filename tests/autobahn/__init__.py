"""Autobahn|Testsuite 0.8.2 harness for threadws (see README.md here)."""
