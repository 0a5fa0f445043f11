"""Fault-injection scenarios (issue 17): each module's ``scenarios()`` runs its faults and returns one row per
scenario (what was injected, what survived, what data was lost, whether training stopped);
``python -m research.benchmarks.fault_injection`` prints them as one table."""
