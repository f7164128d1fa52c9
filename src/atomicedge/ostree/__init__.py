"""ostree"""
