"""Paper A (Singh, distinctiveness pruning), notebook ``01_distinctiveness``."""
