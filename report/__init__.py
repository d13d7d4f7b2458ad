"""objcrop.report: collect results.json files into tables and plots (reads files only)."""
