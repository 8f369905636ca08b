"""Paper D (Choi & Im, DAG topology search for multi-task learning), notebook ``04_dag``."""
