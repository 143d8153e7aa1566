"""Local stand-ins for Azure services (development only)."""
