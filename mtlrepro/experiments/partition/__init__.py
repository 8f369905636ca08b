"""Paper E (Newell et al., feature partitioning); so far its table arithmetic check."""
