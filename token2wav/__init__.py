"""streamvoice package."""
