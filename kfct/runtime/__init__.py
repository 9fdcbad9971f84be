"""What every process runs on: settings, logging, retries, the stage prologue and its clock."""
