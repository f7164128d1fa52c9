"""Blueprint customizations, one small module per kind, each applied with the real tool.

All run against the package tree *before* OSTree preparation (so /etc is still /etc) and in a
fixed order (groups before users, directories before files) so the result is reproducible.
"""
