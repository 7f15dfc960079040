"""Kontext Bot's services: everything but the Discord surface. Nothing here imports discord."""
