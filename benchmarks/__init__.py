"""Side-by-side speed comparisons: `make bench` (each prints ratios measured in one run)."""
