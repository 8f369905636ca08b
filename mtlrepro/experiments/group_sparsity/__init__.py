"""Paper B (Upadhyay et al., channel-wise group sparsity), notebook ``02_group_sparsity``."""
