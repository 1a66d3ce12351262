"""Static analyses the passes use (AutoGraph's static_analysis, much reduced)."""
