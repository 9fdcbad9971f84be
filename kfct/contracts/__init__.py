"""Files and interfaces two layers share: the split state, window stats, prediction log, launcher."""
