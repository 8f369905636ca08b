"""Paper C (Ren & Shi, over-parameterised multi-task learning), notebook ``03_overparam``."""
