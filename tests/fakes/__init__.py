"""Small fakes of servers that cannot run here (commercial products only)."""
