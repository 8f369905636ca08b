"""The baselines notebook (``00_baselines``): single-task vs shared-bottom networks in paper D's
Table 2 and 11 layout."""
