"""Model evaluation: classifier metrics (overall, by segment), the comparison report, the gate."""
