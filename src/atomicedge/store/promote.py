"""Stage -> production promotion (implemented below in this module)."""
