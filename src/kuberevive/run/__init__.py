"""Executors: apply plans to the node step by step, with a journal (resume) and a lock."""
